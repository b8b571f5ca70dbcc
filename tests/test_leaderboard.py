"""The leaderboard's headline table, card footnotes and the two support-set verdicts."""

import re

from bench.harness.leaderboard import AUGMENT_DIVERSITY, COPIES, write_leaderboard
from bench.harness.store import ResultStore
from methods import METHODS

SPLIT = "fashion-mnist/novel9-4shot.v1"
CARD = {"version": "1", "feature_weights_sha256": "a" * 64, "n_samples": 1000}
OTHER_CARD = {**CARD, "feature_weights_sha256": "b" * 64}


def record(method, values, seed=0, is_reference=False, cards=None, loss_curves=False, version=None):
    """A successful run record; `cards` maps a metric to its card (default `CARD`); `version` is the method's code
    version the record says it was made by (none by default)."""
    artifacts = {"grid": f"grids/{SPLIT}/{method}/quick/seed{seed}.png"}
    if loss_curves:
        artifacts["loss_curves"] = f"plots/{SPLIT}/{method}/quick/seed{seed}.png"
    return {
        "schema": 1,
        "status": "ok",
        "key": {"method": method, "split_id": SPLIT, "profile": "quick", "seed": seed},
        "method": {"name": method, "is_reference": is_reference, **({"version": version} if version else {})},
        "evaluation": {"n_samples": 1000},
        "timings": {"fit": 1.0},
        "artifacts": artifacts,
        "metrics": {
            name: {"status": "ok", "value": value, "card": dict((cards or {}).get(name, CARD))}
            for name, value in values.items()
        },
    }


def render(tmp_path, records):
    store = ResultStore(tmp_path / "results")
    for rec in records:
        store.write(rec)
    path, errors = write_leaderboard(store, tmp_path / "leaderboard.md")
    assert not errors
    return path.read_text()


def headline(text):
    """The first section's headline: the text from its section heading to its full table."""
    section = text[text.index("\n## ") :]
    return section[: section.index("All metrics")]


def headline_rows(text, whole_page=True):
    """{method: [rank, method cell, metric cells..., verdict]} of the first headline table (of `text` itself when it
    is not a whole page)."""
    rows = {}
    for line in (headline(text) if whole_page else text).splitlines():
        if line.startswith("| ") and not line.startswith("| # |"):
            cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
            rows[re.search(r"\[?([\w-]+)\]?", cells[1].strip("*")).group(1)] = cells
    return rows


def headline_columns(text):
    header = next(line for line in headline(text).splitlines() if line.startswith("| # |"))
    return [cell.strip() for cell in header.strip().strip("|").split(" | ")]


def cell(text, method, column):
    return headline_rows(text)[method][headline_columns(text).index(column)]


def full_row(text, method):
    return next(line for line in text.splitlines() if line.startswith(f"| `{method}` |"))


def test_headline_ranks_by_fid_and_bolds_the_best_method_per_direction(tmp_path):
    text = render(
        tmp_path,
        [
            record("a", {"fid": 100.0, "precision": 0.5, "mse": 0.03}, loss_curves=True),
            record("a", {"fid": 120.0, "precision": 0.6, "mse": 0.03}, seed=1, loss_curves=True),
            record("b", {"fid": 50.0, "precision": 0.4, "mse": 0.02}),
            record("c", {"fid": 200.0, "precision": 0.9, "mse": 0.01}),
            record("oracle", {"fid": 5.0, "precision": 0.95, "mse": 0.001}, is_reference=True),  # better, but the scale
        ],
    )
    assert "Ranked by fid ↓" in headline(text)
    assert headline_columns(text) == ["#", "method", "fid ↓", "precision ↑", "verdict"]  # mse is not a key metric
    rows = headline_rows(text)
    assert list(rows) == ["b", "a", "c", "oracle"] and [r[0] for r in rows.values()] == ["1", "2", "3", "ref"]
    assert cell(text, "b", "fid ↓") == "**50.0**"  # lower is better
    assert cell(text, "c", "precision ↑") == "**0.900**"  # higher is better
    assert (
        cell(text, "a", "fid ↓") == "110±14" and cell(text, "a", "precision ↑") == "0.550±0.071"
    )  # mean±std, no interval
    assert cell(text, "oracle", "fid ↓") == "5.000" and rows["oracle"][1].startswith("*[oracle][")
    assert sum("**" in c for r in rows.values() for c in r[2:]) == 2
    # The method links the grid of its lowest seed and, when recorded, its loss curves.
    grid, loss = re.fullmatch(r"\[a\]\[([a-z]+\d+)\] · \[loss\]\[([a-z]+\d+)\]", rows["a"][1]).groups()
    assert f"[{grid}]: results/grids/{SPLIT}/a/quick/seed0.png" in text
    assert f"[{loss}]: results/plots/{SPLIT}/a/quick/seed0.png" in text
    assert "[loss]" not in rows["b"][1]
    # The full table keeps every metric with its bootstrap interval.
    assert "110.00 ± 14.14 [100.00, 120.00]" in full_row(text, "a") and "0.0300" in full_row(text, "a")


def test_a_row_added_to_one_section_renumbers_no_other_sections_links(tmp_path):
    def standard(rec):
        """`rec` in the `standard` section, which follows `quick`'s on the page."""
        rec["key"]["profile"] = "standard"
        rec["artifacts"] = {name: path.replace("/quick/", "/standard/") for name, path in rec["artifacts"].items()}
        return rec

    later = [standard(record(m, {"fid": 10.0 * i}, loss_curves=True)) for i, m in enumerate(["x", "y"], 1)]
    before = render(tmp_path / "before", [record("a", {"fid": 1.0}, loss_curves=True), *later])
    after = render(tmp_path / "after", [record(m, {"fid": 1.0}, loss_curves=True) for m in ("a", "b")] + later)

    def standard_section(text):
        return text[text.index("· profile `standard`") :]

    assert "[b][" in after and standard_section(after) == standard_section(before)
    assert f"]: results/plots/{SPLIT}/y/standard/seed0.png" in standard_section(after)


def test_a_metric_without_direction_is_never_bold_nor_ranked_by(tmp_path):
    text = render(tmp_path, [record("a", {"support_nn_feat": 1.0}), record("b", {"support_nn_feat": 2.0})])
    assert headline_columns(text) == ["#", "method", "support_nn_feat ·", "verdict"]
    assert "Not ranked" in headline(text) and "**" not in "".join(headline(text).splitlines()[4:])
    assert [r[0] for r in headline_rows(text).values()] == ["–", "–"]


def test_a_row_measured_with_another_card_gets_a_footnote_and_is_kept_apart(tmp_path):
    other = {"fid": OTHER_CARD}
    text = render(
        tmp_path,
        [
            record("a", {"fid": 100.0, "precision": 0.5}),
            record("b", {"fid": 120.0, "precision": 0.6}),
            record("c", {"fid": 50.0, "precision": 0.7}, cards=other),  # lowest fid, but another evaluator
            record("c", {"fid": 70.0, "precision": 0.7}, seed=1, cards=other),
            record("d", {"fid": 10.0, "precision": 0.1}),  # one seed measured one way, the other another way
            record("d", {"fid": 30.0, "precision": 0.1}, seed=1, cards=other),
        ],
    )
    rows = headline_rows(text)
    assert list(rows) == ["a", "b", "c", "d"] and [r[0] for r in rows.values()] == ["1", "2", "–", "–"]
    assert cell(text, "a", "fid ↓") == "**100**"  # not c's 60 nor d's 10 or 30
    assert cell(text, "c", "fid ↓") == "60.0±14.1¹"  # its own seeds' mean, marked, not bold
    assert cell(text, "c", "precision ↑") == "**0.700±0.000**"  # the same card as the others there: compared
    assert cell(text, "d", "fid ↓") == "cards differ by seed"  # never averaged across cards
    note = next(line for line in headline(text).splitlines() if line.startswith("¹ "))
    assert note.startswith(
        "¹ `c`: fid measured otherwise than `a`, `b`: feature_weights_sha256: bbbbbbbb… vs aaaaaaaa…"
    )
    assert "`d`" not in note and "precision" not in note
    assert "60.00 ± 14.14 [50.00, 70.00]¹" in full_row(text, "c") and "¹" not in full_row(text, "a")
    assert "cards differ across seeds" in full_row(text, "d")
    assert "(card" not in text


def test_nothing_extra_is_printed_when_every_card_agrees(tmp_path):
    text = render(
        tmp_path,
        [
            record("a", {"fid": 100.0, "recall": 0.5}),
            record("b", {"fid": 120.0, "recall": 0.6}),
            record("support-augment", {"fid": 90.0, "recall": 0.4}, is_reference=True),
        ],
    )
    sections = text[text.index("\n## ") :]
    assert not re.search("[¹²³⁴⁵⁶⁷⁸⁹]", sections) and "measured otherwise" not in text and "(card" not in text


def test_rows_recorded_by_another_version_of_the_code_say_so(tmp_path):
    current_vae, current_imle = str(METHODS.get("vae").version), str(METHODS.get("imle").version)
    text = render(
        tmp_path,
        [
            record("vae", {"fid": 100.0}, seed=0, version="0"),
            record("vae", {"fid": 110.0}, seed=1, version=current_vae),
            record("imle", {"fid": 120.0}, version=current_imle),
            record("unregistered", {"fid": 130.0}, version="7"),
        ],
    )
    rows = headline_rows(text)
    assert f"recorded v0, code v{current_vae}" in rows["vae"][1]
    assert "recorded" not in rows["imle"][1] and "recorded" not in rows["unregistered"][1]


def test_ais_likelihoods_of_models_with_different_priors_are_compared_on_one_scale(tmp_path):
    """The prior is the model's, not the measurement's: `nll_ais` of a 32-d and a 64-d latent model rank together."""
    ais = {**CARD, "sigma": 0.1, "steps": 100}
    text = render(
        tmp_path,
        [
            record("a", {"nll_ais": 140.0}, cards={"nll_ais": {**ais, "prior": "N(0, I_32)", "prior_components": 1}}),
            record("b", {"nll_ais": 200.0}, cards={"nll_ais": {**ais, "prior": "N(0, I_64)", "prior_components": 4}}),
            record("c", {"nll_ais": 150.0}, cards={"nll_ais": {**ais, "sigma": 0.2, "prior": "N(0, I_64)"}}),
        ],
    )
    assert cell(text, "a", "nll_ais ↓") == "**140**" and cell(text, "b", "nll_ais ↓") == "200"
    assert "sigma" in text[text.index("¹ `c`") :].splitlines()[0]  # another observation model is measured otherwise


def test_headline_fits_a_screen_and_has_no_card_tags(tmp_path):
    metrics = {
        "fid": 1234.5,
        "kid": 23456.7,
        "precision": 0.312,
        "recall": 0.004,
        "density": 0.2,
        "coverage": 0.101,
        "class_consistency": 0.993,
        "lpips_backtrack": 0.596,
        "lpips_backtrack_support": 0.14,
        "nll": 191.9,
        "brisque": 47.3,
        "mse": 0.031,
        "ssim": 0.57,
        "support_nn_mse": 0.04,
        "support_nn_shift_mse": 0.01,
        "support_nn_feat": 22.1,
    }
    floors = {**metrics, "recall": 0.5, "coverage": 0.5, "support_nn_shift_mse": 0.02, "support_nn_feat": 14.0}
    other = {
        m: OTHER_CARD for m in metrics if m not in ("recall", "coverage", "support_nn_shift_mse", "support_nn_feat")
    }
    records = []
    for seed in range(3):
        jitter = 1 + 0.1 * seed
        # The widest rows the committed results have, made wider: a long name, three seeds, loss curves,
        # both verdicts; a single seed measured with another evaluator (a footnote on most cells).
        records.append(record("cadavqvae", {m: v * jitter for m, v in metrics.items()}, seed=seed, loss_curves=True))
        for reference in ("oracle", "support-copy", "support-augment"):
            records.append(record(reference, {m: v * jitter for m, v in floors.items()}, seed=seed, is_reference=True))
    records.append(record("vqvae-other", {**metrics, "coverage": 0.9}, loss_curves=True, cards=other))
    for i in range(10):
        records.append(record(f"method{i}", {m: v * (1 + i / 10) for m, v in metrics.items()}, loss_curves=True))
    text = render(tmp_path, records)
    table = [line for line in headline(text).splitlines() if line.startswith("|")]
    assert len(table) == 2 + 12 + 3
    widths = [len(line) for line in table]
    assert max(widths) < 160, max(zip(widths, table))
    assert "(card" not in headline(text) and "¹" in cell(text, "vqvae-other", "fid ↓")
    assert cell(text, "cadavqvae", "verdict") == f"{COPIES.short}; {AUGMENT_DIVERSITY.short}"


FLOORS = [
    record(
        "support-copy",
        {"recall": 0.0, "coverage": 0.02, "support_nn_shift_mse": 0.0, "support_nn_feat": 0.0},
        is_reference=True,
    ),
    record(
        "support-augment",
        {"recall": 0.02, "coverage": 0.2, "support_nn_shift_mse": 0.02, "support_nn_feat": 14.0},
        is_reference=True,
    ),
]


def test_the_two_verdicts_fire_independently(tmp_path):
    text = render(
        tmp_path,
        FLOORS
        + [
            # close to the support set (shifted copies) but diverse: copies only
            record(
                "near-diverse", {"recall": 0.5, "coverage": 0.6, "support_nn_shift_mse": 0.01, "support_nn_feat": 20.0}
            ),
            # feature distance between the two floors: at or below the larger one, so it copies
            record(
                "near-in-features",
                {"recall": 0.5, "coverage": 0.6, "support_nn_shift_mse": 0.05, "support_nn_feat": 9.0},
            ),
            # far from the support set but with low coverage (collapsed, under-trained): the diversity verdict only
            record(
                "far-narrow", {"recall": 0.3, "coverage": 0.1, "support_nn_shift_mse": 0.05, "support_nn_feat": 20.0}
            ),
            record(
                "near-narrow", {"recall": 0.01, "coverage": 0.1, "support_nn_shift_mse": 0.01, "support_nn_feat": 20.0}
            ),
            record(
                "far-diverse", {"recall": 0.5, "coverage": 0.6, "support_nn_shift_mse": 0.05, "support_nn_feat": 20.0}
            ),
        ],
    )
    verdict = {m: cell(text, m, "verdict") for m in headline_rows(text) if not m.startswith("support-")}
    assert verdict == {
        "near-diverse": COPIES.short,
        "near-in-features": COPIES.short,
        "far-narrow": AUGMENT_DIVERSITY.short,
        "near-narrow": f"{COPIES.short}; {AUGMENT_DIVERSITY.short}",
        "far-diverse": "-",
    }
    assert full_row(text, "near-diverse").endswith(
        f"| **{COPIES.full}** (support_nn_shift_mse 0.01 <= support-augment 0.02) |"
    )
    assert full_row(text, "near-in-features").endswith(
        f"| **{COPIES.full}** (support_nn_feat 9 <= support-augment 14) |"
    )
    assert full_row(text, "far-narrow").endswith(
        f"| **{AUGMENT_DIVERSITY.full}** (coverage 0.1 <= support-augment 0.2) |"
    )
    # Both wordings are defined once, in the page header.
    assert text.count(COPIES.full) == 1 + 3 and f"*{AUGMENT_DIVERSITY.full}*" in text[: text.index("\n## ")]


def test_no_floor_row_or_another_card_means_no_verdict(tmp_path):
    alone = render(
        tmp_path / "alone",
        [
            record(
                "near-narrow", {"recall": 0.01, "coverage": 0.1, "support_nn_shift_mse": 0.01, "support_nn_feat": 1.0}
            )
        ],
    )
    assert cell(alone, "near-narrow", "verdict") == "not checked"
    measured_otherwise = render(
        tmp_path / "other",
        FLOORS
        + [
            record(
                "near-narrow",
                {"recall": 0.01, "coverage": 0.1, "support_nn_shift_mse": 0.01, "support_nn_feat": 1.0},
                cards={"recall": OTHER_CARD, "coverage": OTHER_CARD},
            )
        ],
    )
    assert cell(measured_otherwise, "near-narrow", "verdict") == f"{COPIES.short} (diversity not checked)"


def test_the_readme_example_is_the_headline_table_regenerated_between_its_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\nintro\n<!-- example:start -->\nstale numbers\n<!-- example:end -->\n\n## After\n")
    text = render(
        tmp_path,
        [
            record("vae", {"fid": 700.0}),
            record("dcgan", {"fid": 650.0}),
            record("support-copy", {"fid": 600.0}, is_reference=True),
        ],
    )
    updated = readme.read_text()
    assert (
        "stale numbers" not in updated and updated.startswith("# Title\n\nintro\n") and updated.endswith("## After\n")
    )
    block = updated[updated.index("<!-- example:start -->") : updated.index("<!-- example:end -->")]
    assert headline_rows(block, whole_page=False) == headline_rows(text)  # the same rows the leaderboard shows
    assert list(headline_rows(block, whole_page=False)) == ["dcgan", "vae", "support-copy"]
    render(tmp_path, [record("vae", {"fid": 700.0})])  # regenerating replaces the block, never appends
    assert readme.read_text().count("<!-- example:start -->") == 1


def test_a_readme_without_markers_is_left_alone(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# My project\n")
    render(tmp_path, [record("vae", {"fid": 700.0})])
    assert readme.read_text() == "# My project\n"
