"""GLUE loader: the four tasks in ../shared/data/glue, the five others on files written here."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from autopeft_service.domain.errors import DataError
from workers.data.glue import glue_task_names, load_glue, resolve_glue_task
from workers.data.task import TaskType

# (task, train, dev, label names, metrics, task type). MRPC: the shared README's table says
# 3668 train rows (the official GLUE count), but the shared train.tsv holds 3667 data rows
# (3668 lines including the header); we assert what the file holds.
SHARED = [
    ("sst2", 67349, 872, ("0", "1"), ("accuracy",), TaskType.CLASSIFICATION),
    ("mrpc", 3667, 408, ("0", "1"), ("f1", "accuracy"), TaskType.CLASSIFICATION),
    ("rte", 2490, 277, ("entailment", "not_entailment"), ("accuracy",), TaskType.CLASSIFICATION),
    ("stsb", 5749, 1500, (), ("pearson", "spearman"), TaskType.REGRESSION),
]


@pytest.mark.parametrize(("task", "n_train", "n_dev", "labels", "metrics", "kind"), SHARED)
def test_shared_glue_tasks_have_documented_counts_and_labels(
    glue_dir: Path, task, n_train, n_dev, labels, metrics, kind
) -> None:
    data = load_glue(task, glue_dir)
    assert data.name == f"glue:{task}"
    assert (len(data.train), len(data.dev)) == (n_train, n_dev)
    assert data.label_names == labels
    assert data.metrics == metrics
    assert data.task_type is kind
    n_texts = 1 if task == "sst2" else 2
    assert all(len(ex.texts) == n_texts for ex in data.train + data.dev)
    if kind is TaskType.CLASSIFICATION:
        assert {ex.label for ex in data.train} == set(range(len(labels)))
        assert {ex.label for ex in data.dev} == set(range(len(labels)))
        assert data.num_labels == len(labels)
    else:
        scores = [ex.label for ex in data.train + data.dev]
        assert min(scores) == 0.0 and max(scores) == 5.0
        assert data.num_labels == 1


def test_first_rows_are_parsed_field_by_field(glue_dir: Path) -> None:
    sst2 = load_glue("sst2", glue_dir)
    assert sst2.train[0].texts == ("hide new secretions from the parental units ",)
    assert sst2.train[0].label == 0
    mrpc = load_glue("mrpc", glue_dir)  # header with a byte-order mark
    assert mrpc.train[0].texts[0].startswith("Amrozi accused his brother")
    assert mrpc.train[0].texts[1].startswith("Referring to him as only")
    assert mrpc.train[0].label == 1
    rte = load_glue("rte", glue_dir)
    assert rte.train[0].texts == (
        "No Weapons of Mass Destruction Found in Iraq Yet.",
        "Weapons of Mass Destruction Found in Iraq.",
    )
    assert rte.label_names[rte.train[0].label] == "not_entailment"
    stsb = load_glue("stsb", glue_dir)
    assert stsb.train[0].texts == ("A plane is taking off.", "An air plane is taking off.")
    assert stsb.train[0].label == 5.0
    assert stsb.train[1].label == pytest.approx(3.8)


def test_quote_characters_do_not_merge_rows(glue_dir: Path) -> None:
    mrpc = load_glue("mrpc", glue_dir)
    quoted = [ex for ex in mrpc.train if '"' in ex.texts[0]]
    assert quoted, "MRPC has sentences with quote characters"
    # With csv's default quoting a quote would swallow tabs/newlines into one field.
    assert all("\t" not in t and "\n" not in t for ex in mrpc.train for t in ex.texts)


def test_loading_all_of_sst2_is_fast(glue_dir: Path) -> None:
    start = time.perf_counter()
    data = load_glue("SST-2", glue_dir)
    assert time.perf_counter() - start < 3.0
    assert len(data.train) == 67349


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [("SST-2", "sst2"), ("sst2", "sst2"), ("Sst_2", "sst2"), ("STS-B", "stsb"), ("stsb", "stsb"),
     ("CoLA", "cola"), ("MNLI", "mnli"), ("mnli-m", "mnli"), ("mnli_mismatched", "mnli-mm"),
     ("QQP", "qqp"), ("qnli", "qnli"), ("RTE", "rte"), ("wnli", "wnli"), ("MRPC", "mrpc")],
)
def test_task_names_are_case_insensitive_with_aliases(alias: str, canonical: str) -> None:
    assert resolve_glue_task(alias).name == canonical


def test_unknown_task_lists_known_ones() -> None:
    with pytest.raises(DataError, match="unknown GLUE task 'sst5'") as err:
        resolve_glue_task("sst5")
    for name in ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"):
        assert name in str(err.value)
    assert set(glue_task_names()) >= {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli",
                                      "rte", "wnli"}


def test_missing_directory_task_folder_and_file_are_named(tmp_path: Path, write_tsv) -> None:
    with pytest.raises(DataError, match=r"GLUE data directory .*nowhere does not exist"):
        load_glue("rte", tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"GLUE task folder .*RTE does not exist"):
        load_glue("rte", tmp_path)
    write_tsv("RTE", "train.tsv", [["index", "sentence1", "sentence2", "label"],
                                   ["0", "a", "b", "entailment"]])
    with pytest.raises(DataError, match=r"GLUE file .*RTE/dev.tsv does not exist"):
        load_glue("rte", tmp_path / "glue")


def test_task_folder_itself_is_accepted_as_data_dir(glue_dir: Path) -> None:
    assert len(load_glue("rte", glue_dir / "RTE").dev) == 277


# ---- the five tasks not in the shared folder, in their distributed formats ----------------

def test_cola_has_no_header(tmp_path: Path, write_tsv) -> None:
    rows = [["gj04", "1", "", "Our friends won't buy this analysis, let alone the next one."],
            ["gj04", "0", "*", "They drank the pub."],
            ["gj04", "1", "", 'He said "hello there.']]  # an unbalanced quote
    write_tsv("CoLA", "train.tsv", rows)
    write_tsv("CoLA", "dev.tsv", rows[:2])
    data = load_glue("cola", tmp_path / "glue")
    assert data.name == "glue:cola" and data.metrics == ("matthews",)
    assert [ex.label for ex in data.train] == [1, 0, 1]
    assert data.train[1].texts == ("They drank the pub.",)
    assert data.train[2].texts == ('He said "hello there.',)
    assert len(data.dev) == 2


def test_mnli_reads_gold_label_and_dev_matched(tmp_path: Path, write_tsv) -> None:
    base = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse",
            "sentence2_binary_parse", "sentence1_parse", "sentence2_parse", "sentence1",
            "sentence2"]
    train_header = [*base, "label1", "gold_label"]
    dev_header = [*base, "label1", "label2", "label3", "label4", "label5", "gold_label"]

    def row(i: int, gold: str, n_votes: int) -> list[str]:
        return [str(i), "1", f"{i}e", "fiction", "( a )", "( b )", "(ROOT a)", "(ROOT b)",
                f"premise {i}", f"hypothesis {i}", *([gold] * n_votes), gold]

    write_tsv("MNLI", "train.tsv", [train_header, row(0, "neutral", 1),
                                    row(1, "contradiction", 1), row(2, "entailment", 1)])
    write_tsv("MNLI", "dev_matched.tsv", [dev_header, row(3, "contradiction", 5)])
    write_tsv("MNLI", "dev_mismatched.tsv", [dev_header, row(4, "entailment", 5),
                                             row(5, "neutral", 5)])
    data = load_glue("mnli", tmp_path / "glue")
    assert data.label_names == ("entailment", "neutral", "contradiction")
    assert [ex.label for ex in data.train] == [1, 2, 0]
    assert data.train[0].texts == ("premise 0", "hypothesis 0")
    assert [ex.label for ex in data.dev] == [2]
    mismatched = load_glue("mnli-mm", tmp_path / "glue")
    assert [ex.label for ex in mismatched.dev] == [0, 1]


def test_qqp_qnli_wnli(tmp_path: Path, write_tsv) -> None:
    qqp = [["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
           ["0", "1", "2", "How do I learn?", "What is the way to learn?", "1"],
           ["1", "3", "4", "Why is the sky blue?", "Who won?", "0"]]
    qnli = [["index", "question", "sentence", "label"],
            ["0", "When?", "In 1999.", "entailment"],
            ["1", "Who?", "Nobody knows.", "not_entailment"]]
    wnli = [["index", "sentence1", "sentence2", "label"],
            ["0", "I stuck a pin through a carrot.", "The carrot has a hole.", "1"],
            ["1", "John couldn't see the stage.", "The stage was tall.", "0"]]
    for task_dir, rows in (("QQP", qqp), ("QNLI", qnli), ("WNLI", wnli)):
        write_tsv(task_dir, "train.tsv", rows)
        write_tsv(task_dir, "dev.tsv", rows)
    q = load_glue("qqp", tmp_path / "glue")
    assert q.metrics == ("f1", "accuracy")
    assert [ex.label for ex in q.train] == [1, 0]
    assert q.train[1].texts == ("Why is the sky blue?", "Who won?")
    n = load_glue("QNLI", tmp_path / "glue")
    assert n.label_names == ("entailment", "not_entailment")
    assert [ex.label for ex in n.dev] == [0, 1]
    assert n.dev[0].texts == ("When?", "In 1999.")
    w = load_glue("wnli", tmp_path / "glue")
    assert [ex.label for ex in w.train] == [1, 0] and w.metrics == ("accuracy",)


# ---- malformed files ------------------------------------------------------------------------

RTE_HEADER = ["index", "sentence1", "sentence2", "label"]


def _rte(write_tsv, train_rows, dev_rows=None) -> None:
    write_tsv("RTE", "train.tsv", [RTE_HEADER, *train_rows])
    write_tsv("RTE", "dev.tsv", [RTE_HEADER, *(dev_rows or [["0", "a", "b", "entailment"]])])


def test_row_with_too_few_fields_names_file_and_line(tmp_path: Path, write_tsv) -> None:
    _rte(write_tsv, [["0", "a", "b", "entailment"], ["1", "only one sentence", "entailment"]])
    with pytest.raises(DataError, match=r"RTE/train\.tsv, line 3: expected 4 tab-separated "
                                        r"fields \(index, sentence1, sentence2, label\), found 3"):
        load_glue("rte", tmp_path / "glue")


def test_label_outside_the_label_set(tmp_path: Path, write_tsv) -> None:
    _rte(write_tsv, [["0", "a", "b", "entailment"]], [["0", "a", "b", "entailment"],
                                                      ["1", "a", "b", "contradiction"]])
    with pytest.raises(DataError, match=r"RTE/dev\.tsv, line 3: column 'label': label "
                                        r"'contradiction' is not one of"):
        load_glue("rte", tmp_path / "glue")


def test_sts_b_score_must_be_a_number_in_range(tmp_path: Path, write_tsv) -> None:
    header = ["index", "genre", "filename", "year", "old_index", "source1", "source2",
              "sentence1", "sentence2", "score"]
    good = ["0", "main", "f", "2012", "1", "none", "none", "a", "b", "3.5"]
    write_tsv("STS-B", "dev.tsv", [header, good])
    write_tsv("STS-B", "train.tsv", [header, good, [*good[:-1], "high"]])
    with pytest.raises(DataError, match=r"STS-B/train\.tsv, line 3: column 'score': score "
                                        r"'high' is not a number"):
        load_glue("stsb", tmp_path / "glue")
    write_tsv("STS-B", "train.tsv", [header, [*good[:-1], "7"]])
    with pytest.raises(DataError, match=r"line 2: column 'score': score '7' is outside \[0, 5\]"):
        load_glue("sts-b", tmp_path / "glue")


def test_missing_header_column(tmp_path: Path, write_tsv) -> None:
    write_tsv("RTE", "train.tsv", [["index", "sentence1", "sentence2", "gold"],
                                   ["0", "a", "b", "entailment"]])
    with pytest.raises(DataError, match=r"RTE/train\.tsv, line 1 \(header\): missing column\(s\) "
                                        r"\['label'\]"):
        load_glue("rte", tmp_path / "glue")


def test_empty_and_header_only_files(tmp_path: Path, write_tsv) -> None:
    write_tsv("RTE", "train.tsv", [])
    write_tsv("RTE", "dev.tsv", [RTE_HEADER])
    with pytest.raises(DataError, match=r"RTE/train\.tsv: empty file"):
        load_glue("rte", tmp_path / "glue")
    write_tsv("RTE", "train.tsv", [RTE_HEADER, ["0", "a", "b", "entailment"]])
    with pytest.raises(DataError, match=r"RTE/dev\.tsv: no examples"):
        load_glue("rte", tmp_path / "glue")


def test_bom_header_is_read(tmp_path: Path, write_tsv) -> None:
    rows = [["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"], ["0", "1", "2", "a", "b"]]
    write_tsv("MRPC", "train.tsv", rows, bom=True)
    write_tsv("MRPC", "dev.tsv", rows, bom=True)
    assert load_glue("mrpc", tmp_path / "glue").train[0].label == 0
