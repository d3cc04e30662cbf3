"""serve: the search as a service, an HTTP API and a web app (`t2i serve`).

Taught in notebook 04. `api.create_api` builds the FastAPI application from `schemas` (request and response
models), `uploads` (upload checks) and `auth` (API key, sign-in); `app` mounts the Gradio page; `server` runs it
all (`BackgroundServer`, `serve_app`, the `serve` command) and measures latency. A new API route goes in
`api.create_api` with its models in `schemas` and a test in tests/test_api.py. The top wing: imports `engine`
and every wing below it.
"""
