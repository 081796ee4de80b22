"""RESULTS is a boundary (issue 23, docs/outputs.md): every path a stage reads or writes below it
resolves inside it. A link that leads out is refused in one line, before anything is read or
written; nothing outside is written, removed or embedded in the page. The root itself may be a link.
And an output never replaces an input of another kind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlreassess.cli import main
from mlreassess.errors import InputError
from mlreassess.io import read_meta, write_table
from mlreassess.metrics.evaluate import evaluate_results
from mlreassess.report.html import write_results_page
from mlreassess.results import ResultsLayout, files_in, inside
from test_inference_run import infer, model_args, tiny, write_sources  # noqa: F401  (tiny: a fixture)

V1 = {f"s{i}": (i % 3, [i % 3]) for i in range(6)}


@pytest.fixture
def results(tmp_path, write_dataset, write_predictions):
    root = tmp_path / "results"
    write_dataset(root, "v1", "imagenet_v1", V1)
    write_predictions(root, "v1", "imagenet_v1", "m", {s: [ls[0], 7, 8] for s, (_, ls) in V1.items()})
    evaluate_results(root, n_boot=10, min_group_n=1)
    return root


@pytest.fixture
def outside(tmp_path):
    """A folder outside RESULTS holding files a report would write: they must stay as they are."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    for name in ("table3.md", "figure5.png", "m.parquet", "v1.parquet"):
        (folder / name).write_bytes(b"not yours " + name.encode())
    return folder


def _unchanged(folder: Path) -> bool:
    return all((folder / n).read_bytes() == b"not yours " + n.encode()
               for n in ("table3.md", "figure5.png", "m.parquet", "v1.parquet"))


def _one_line(capsys, *words: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(w in err[0] for w in words), err
    return err[0]


# ---------------------------------------------------------------- the rule itself

def test_inside_follows_links_and_names_the_one_that_leads_out(tmp_path):
    root, out = tmp_path / "r", tmp_path / "o"
    (root / "a").mkdir(parents=True)
    out.mkdir()
    (root / "b").symlink_to(root / "a")  # a link inside is fine
    assert inside(root, root / "b" / "x.parquet") == root / "b" / "x.parquet"
    (root / "a" / "c").symlink_to(out)
    with pytest.raises(InputError, match=r"/r/b/c: a symbolic link to .*/o, outside"):
        inside(root, root / "b" / "c" / "new" / "file.md")  # not there yet: as far as it exists
    with pytest.raises(InputError, match="not inside"):
        inside(root, tmp_path / "x")


def test_a_listed_file_linked_outside_is_refused_not_read(tmp_path):
    root = tmp_path / "r"
    (root / "tables").mkdir(parents=True)
    (root / "tables" / "ok.md").write_text("ok")
    (tmp_path / "secret.md").write_text("secret")
    assert files_in(root, root / "tables", "*.md") == [root / "tables" / "ok.md"]
    (root / "tables" / "zz.md").symlink_to(tmp_path / "secret.md")
    with pytest.raises(InputError, match="zz.md: a symbolic link"):
        files_in(root, root / "tables", "*.md")


def test_a_results_root_that_is_a_link_is_fine(results, tmp_path):
    link = tmp_path / "scratch-link"
    link.symlink_to(results)
    layout = ResultsLayout(link)
    assert layout.prediction("v1", "m").exists() and layout.manifest_copies() == [link / "manifests" / "v1.parquet"]
    assert main(["evaluate", "--results", str(link), "--bootstrap", "10", "--min-group-n", "1"]) == 0
    assert main(["report", "--results", str(link), "table1"]) == 0
    assert (results / "index.html").exists() and (results / "tables" / "table1.md").exists()


# ---------------------------------------------------------------- report and the page

@pytest.mark.parametrize("folder", ["figures", "tables", "figures/canvases"])
def test_report_refuses_a_linked_output_folder_and_leaves_it_alone(results, outside, folder, capsys):
    target = results / folder
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(outside)
    capsys.readouterr()
    assert main(["report", "--results", str(results)]) == 2
    _one_line(capsys, folder.split("/")[-1], "symbolic link", "outside")
    assert _unchanged(outside) and sorted(p.name for p in outside.iterdir()) == ["figure5.png", "m.parquet",
                                                                                   "table3.md", "v1.parquet"]
    assert not (results / "index.html").exists()


@pytest.mark.parametrize("name", ["tables/zz.md", "figures/zz.png"])
def test_a_table_or_figure_linked_to_a_file_outside_is_never_embedded(results, outside, name, capsys):
    path = results / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(outside / ("table3.md" if name.endswith(".md") else "figure5.png"))
    with pytest.raises(InputError, match="zz.*symbolic link"):
        write_results_page(results)
    capsys.readouterr()
    assert main(["report", "--results", str(results)]) == 2
    _one_line(capsys, "zz", "symbolic link")
    assert _unchanged(outside) and not (results / "index.html").exists()


def test_a_record_sidecar_linked_elsewhere_is_not_trusted(results, tmp_path):
    assert main(["report", "--results", str(results), "table1"]) == 0
    sidecar = results / "tables" / ".derived-from.json"
    real = tmp_path / "record.json"
    real.write_bytes(sidecar.read_bytes())
    sidecar.unlink()
    sidecar.symlink_to(real)
    page = write_results_page(results).read_text()
    assert "Table 1" not in page  # no record here: the table is not shown as current


# ---------------------------------------------------------------- infer and evaluate

@pytest.mark.parametrize("where", ["predictions", "predictions/tiny", "manifests", "retired"])
def test_infer_refuses_linked_folders_before_writing_anything(tiny, tmp_path, outside, where, capsys):
    out = tmp_path / "out"
    assert infer("--data", str(tiny["manifest"]), *model_args(tiny, "test_resnet"), out=out) == 0
    link = out / where
    if link.exists():
        os.rename(link, tmp_path / "moved")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside)
    capsys.readouterr()
    # A changed option makes the old output stale: it would be retired and replaced.
    assert infer("--data", str(tiny["manifest"]), *model_args(tiny, "test_resnet"), "--topk", "3", out=out) == 2
    _one_line(capsys, where.split("/")[-1], "symbolic link", "outside")
    assert _unchanged(outside) and len(list(outside.iterdir())) == 4


def test_evaluate_refuses_a_linked_predictions_file(results, outside, capsys):
    path = results / "predictions" / "v1" / "m2.parquet"
    path.symlink_to(outside / "m.parquet")
    assert main(["evaluate", "--results", str(results)]) == 2
    _one_line(capsys, "m2.parquet", "symbolic link")


def test_the_lock_is_never_taken_through_a_link(results, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (results / ".mlreassess.lock").symlink_to(victim)
    from mlreassess.locks import folder_lock

    with pytest.raises(InputError, match="lock.*symbolic link"):
        with folder_lock(results):
            pass
    assert victim.read_text() == "keep"


# ---------------------------------------------------------------- outputs never replace inputs

@pytest.mark.parametrize("target", ["manifests/v1.parquet", "predictions/v1/m.parquet"])
def test_evaluate_out_onto_an_input_is_refused(results, target, capsys):
    path = results / target
    before = path.read_bytes()
    assert main(["evaluate", "--results", str(results), "--out", str(path)]) == 2
    _one_line(capsys, target.split("/")[-1], "refusing to replace it with metrics")
    assert path.read_bytes() == before


def test_a_manifest_never_replaces_predictions_or_a_manifest_of_another_kind(results, write_dataset, tmp_path):
    pml = write_dataset(tmp_path / "pml", "patchml_seed1", "patchml", {"k2_000000": (None, [1, 2])}, counts=[2])
    before = pml.read_bytes()
    v1 = read_meta(results / "manifests" / "v1.parquet")
    from mlreassess.io import read_table

    table = read_table(results / "manifests" / "v1.parquet")
    with pytest.raises(InputError, match="holds a patchml manifest; refusing to replace it with an imagenet_v1 manifest"):
        write_table(pml, table, v1)
    with pytest.raises(InputError, match="holds predictions"):
        write_table(results / "predictions" / "v1" / "m.parquet", table, v1)
    assert pml.read_bytes() == before
    write_table(results / "manifests" / "v1.parquet", table, v1)  # the same kind: a rebuild replaces it


def test_data_out_onto_a_patchml_manifest_is_refused(mini_root, results, write_dataset, tmp_path, capsys):
    pml = write_dataset(tmp_path / "pml", "patchml_seed1", "patchml", {"k2_000000": (None, [1, 2])}, counts=[2])
    before = pml.read_bytes()
    assert main(["data", "imagenet-val", "--root", str(mini_root), "--out", str(pml)]) == 2
    _one_line(capsys, "manifest.parquet" if pml.name == "manifest.parquet" else pml.name, "patchml manifest")
    assert pml.read_bytes() == before


def test_patchml_out_onto_a_folder_holding_a_v1_manifest_is_refused_before_any_work(results, tmp_path, capsys):
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "manifest.parquet").write_bytes((results / "manifests" / "v1.parquet").read_bytes())
    (folder / "images").mkdir()
    (folder / "images" / "k2_000000.png").write_bytes(b"png")
    write_sources(tmp_path, 4)
    assert main(["patchml", "--boxes", str(tmp_path / "boxes.csv"), "--seed", "1", "--out", str(folder), "--no-render",
                 "--counts", "2", "--canvas", "64", "--min-box-side", "4"]) == 2
    _one_line(capsys, "holds an imagenet_v1 manifest; refusing to replace it with a patchml manifest")
    assert (folder / "images" / "k2_000000.png").exists()
    assert (folder / "manifest.parquet").read_bytes() == (results / "manifests" / "v1.parquet").read_bytes()


def test_a_failed_evaluate_leaves_no_page_that_looks_current(results, capsys):
    assert main(["report", "--results", str(results)]) == 0
    page = results / "index.html"
    assert "Leaderboard" in page.read_text()
    (results / "predictions" / "v1" / "m.parquet").write_bytes(b"garbage")  # edited: evaluate now fails
    capsys.readouterr()
    assert main(["evaluate", "--results", str(results)]) == 2
    text = page.read_text()
    assert "out of date" in text and "evaluate failed" in text and "Leaderboard" not in text
    assert "m.parquet" in text  # the reason, escaped
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mlreassess: error: ") and "m.parquet" in err[-1]
    assert not any("Traceback" in line for line in err)


def test_an_overwrite_that_fails_leaves_no_old_file_passing_for_current(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    assert infer("--data", str(tiny["manifest"]), *model_args(tiny, "test_resnet"), out=out) == 0
    layout = ResultsLayout(out)
    path, retired = layout.prediction("tiny", "test_resnet"), layout.retired("tiny", "test_resnet")
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not weights")
    assert infer("--data", str(tiny["manifest"]), "--model", "test_resnet", "--weights", f"file:{broken}",
                 "--overwrite", out=out) == 1
    assert not path.exists() and retired.exists()  # kept for a person, out of what evaluate reads
    assert "redoing it: --overwrite" in capsys.readouterr().err


def test_a_patchml_sets_images_folder_linked_outside_is_refused(tmp_path, outside, capsys):
    write_sources(tmp_path, 4)
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "images").symlink_to(outside)
    assert main(["patchml", "--boxes", str(tmp_path / "boxes.csv"), "--seed", "1", "--out", str(folder),
                 "--images", str(tmp_path / "src"), "--counts", "2", "--canvas", "64", "--min-box-side", "4"]) == 2
    _one_line(capsys, "images: a symbolic link", "outside")
    assert _unchanged(outside) and len(list(outside.iterdir())) == 4 and not (folder / "manifest.parquet").exists()


def test_canvas_pngs_beside_the_manifest_copies_are_read_only_inside(results, outside):
    (results / "manifests" / "images").symlink_to(outside)
    from mlreassess.report.inputs import png_dirs

    with pytest.raises(InputError, match="manifests/images: a symbolic link"):
        png_dirs(ResultsLayout(results), {})
