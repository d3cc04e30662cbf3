"""The `t2i` command on a real milvus-lite file."""

from __future__ import annotations

import subprocess

import pytest
from pymilvus import MilvusClient

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
    assert "encoder_backend: onnx" in info  # what the default encoder's "auto" picks where onnxruntime is


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


def test_a_file_name_milvus_lite_refuses_is_one_line_and_a_folder_with_spaces_is_fine(tmp_path, image_folder):
    bad = subprocess.run(
        [T2I, "index", str(image_folder), "--uri", str(tmp_path / "my photos" / "a,b.db")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 1 and "Traceback" not in bad.stderr, bad.stderr  # milvus-lite's own ends in one
    assert bad.stderr.strip() == (
        "t2i: error: milvus-lite cannot use the file name 'a,b.db': use only letters, digits, '.', '-' and '_' "
        "in it (e.g. 'a_b.db'); the folder may be named freely"
    )
    assert main(["index", str(image_folder), "--uri", str(tmp_path / "my photos" / "a_b.db")]) == 0


def test_console_script_runs_with_env_uri(tmp_path, image_folder):
    env_uri = str(tmp_path / "env.db")
    import os

    env = {**os.environ, "T2I_MILVUS_URI": env_uri}
    done = subprocess.run([T2I, "index", str(image_folder)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert index_counts(done.stdout) == "added 8, unchanged 0, updated 0, removed 0, skipped 0"
    assert (tmp_path / "env.db").exists()


def test_search_and_info_without_an_index_say_how_to_make_one_and_create_nothing(tmp_path, capsys):
    for argv in (["search", "a dog"], ["search", "--image", "x.png"], ["info"]):
        assert main([*argv, "--uri", str(tmp_path / "new.db")]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"t2i: error: there is no index at {tmp_path / 'new.db'} (collection 't2i_images') yet")
        assert f"`t2i index FOLDER_OR_CSV --uri {tmp_path / 'new.db'}`" in err and "\n" not in err
    assert list(tmp_path.iterdir()) == []  # no milvus-lite file was made


def test_search_does_not_create_a_collection_in_an_existing_file(tmp_path, image_folder, capsys):
    uri = str(tmp_path / "cli.db")
    assert main(["index", str(image_folder), "--uri", uri, "--collection", "mine"]) == 0
    capsys.readouterr()
    assert main(["search", "a dog", "--uri", uri]) == 1  # the default collection is not there
    assert "--uri" in capsys.readouterr().err
    assert main(["info", "--uri", uri, "--collection", "mine"]) == 0
    capsys.readouterr()
    assert MilvusClient(uri).list_collections() == ["mine"]


def test_search_loads_the_encoder_the_collection_was_built_with(tmp_path, image_folder, capsys):
    uri, other = str(tmp_path / "lite0.db"), "conse-effnet-lite0-minilm"
    assert main(["index", str(image_folder), "--uri", uri, "--encoder", other]) == 0
    capsys.readouterr()
    assert main(["search", "a car", "-k", "2", "--uri", uri]) == 0  # no --encoder: the recorded one
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    assert main(["info", "--uri", uri]) == 0
    assert f"encoder: {other}" in capsys.readouterr().out
    assert main(["search", "a car", "--uri", uri, "--encoder", "conse-effnet-minilm"]) == 1  # told otherwise
    assert f"--encoder {other}" in capsys.readouterr().err


def test_search_by_image(tmp_path, image_folder, capsys):
    uri = str(tmp_path / "cli.db")
    assert main(["index", str(image_folder), "--uri", uri]) == 0
    capsys.readouterr()
    picture = sorted((image_folder / "animals").glob("*.png"))[1]
    assert main(["search", "--image", str(picture), "-k", "3", "--uri", uri]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].split()[:3] == ["1", "1.000", str(picture)]
    assert main(["search", "--image", str(tmp_path / "gone.png"), "--uri", uri]) == 1
    assert (
        capsys.readouterr().err.strip()
        == f"t2i: error: cannot read {tmp_path / 'gone.png'}: file not found (or a broken link)"
    )
    with pytest.raises(SystemExit) as usage:  # a text query and a picture at once
        main(["search", "a dog", "--image", str(picture), "--uri", uri])
    assert usage.value.code == 2 and "a text query or --image PATH" in capsys.readouterr().err


def test_a_collection_built_with_a_projection_head_is_searched_with_it(tmp_path, image_folder, capsys):
    """The head's encoder name (`...+head-TAG`) cannot be loaded; the collection also records how it was loaded."""
    import numpy as np

    from t2i_helpers.models.projection import ProjectionHead

    head = ProjectionHead(np.zeros((1000, 384), np.float32), np.zeros(384, np.float32)).save(tmp_path / "head.npz")
    uri = str(tmp_path / "head.db")
    assert main(["index", str(image_folder), "--uri", uri, "--encoder", f"conse-head:{head}"]) == 0
    capsys.readouterr()
    assert main(["search", "a car", "-k", "2", "--uri", uri]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    assert main(["info", "--uri", uri]) == 0
    assert f"encoder_spec: conse-head:{head}" in capsys.readouterr().out
