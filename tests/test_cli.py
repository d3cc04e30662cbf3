"""The `t2i` command on a real milvus-lite file."""

from __future__ import annotations

import subprocess

from t2i_helpers.cli import main

from .conftest import T2I, index_counts, write_bad_files


def test_index_twice_then_search_and_info(tmp_path, image_folder, capsys):
    uri = str(tmp_path / "cli.db")
    write_bad_files(image_folder)
    assert main(["index", str(image_folder), "--uri", uri]) == 0
    out, err = capsys.readouterr()
    assert index_counts(out) == "added 9, unchanged 0, updated 0, removed 0, skipped 4"
    assert "truncated.png" in err and "empty file" in err
    assert main(["index", str(image_folder), "--uri", uri]) == 0
    assert index_counts(capsys.readouterr().out) == "added 0, unchanged 9, updated 0, removed 0, skipped 4"

    assert main(["search", "a car", "-k", "3", "--uri", uri, "--category", "vehicles"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].split()[0] == "1" and "/vehicles/" in lines[0]

    assert main(["info", "--uri", uri]) == 0
    info = capsys.readouterr().out
    assert "encoder: conse-effnet-minilm" in info and "count: 9" in info


def test_errors_are_one_line_with_exit_status_1(tmp_path, image_folder, capsys):
    uri = str(tmp_path / "cli.db")
    assert main(["index", str(image_folder), "--uri", uri]) == 0
    capsys.readouterr()
    assert main(["search", "   ", "--uri", uri]) == 1
    assert "query is empty" in capsys.readouterr().err
    assert main(["index", str(tmp_path / "nope"), "--uri", uri]) == 1
    assert "neither a folder" in capsys.readouterr().err
    assert main(["search", "a cat", "--uri", uri, "--encoder", "conse-effnet-lite0-minilm"]) == 1
    assert "--encoder conse-effnet-minilm" in capsys.readouterr().err


def test_console_script_runs_with_env_uri(tmp_path, image_folder):
    env_uri = str(tmp_path / "env.db")
    import os

    env = {**os.environ, "T2I_MILVUS_URI": env_uri}
    done = subprocess.run([T2I, "index", str(image_folder)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert index_counts(done.stdout) == "added 8, unchanged 0, updated 0, removed 0, skipped 0"
    assert (tmp_path / "env.db").exists()
