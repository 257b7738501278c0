"""Reading the authors' EasyEdit ROME hyper-parameter files (``--hparams FILE``, ``load_model(hparams=FILE)``)."""
import json
import os
from pathlib import Path

import pytest

from rome_collapse import cli, models, stats
from rome_collapse.config import repo_root
from rome_collapse.easyedit_hparams import IGNORED_KEYS, HParamsFileError, parse, read

AUTHORS = Path(os.environ.get("ROME_COLLAPSE_GOLDEN", repo_root().parent / "shared" / "golden")) / "hparams"
# The authors' file → this library's name for the same model (whose published settings are in hparams.yaml).
AUTHORS_FILES = {"gpt2-xl": "gpt2-xl", "gpt-j-6B": "EleutherAI/gpt-j-6B", "llama-7b": "meta-llama/Llama-2-7b-hf",
                 "mistral-7b": "mistralai/Mistral-7B-v0.1"}


def authors_file(stem: str) -> Path:
    path = AUTHORS / f"{stem}.yaml"
    if not path.exists():
        pytest.skip(f"{path} not found (the authors' files live in this workplace's ../shared/golden/hparams)")
    return path


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "hparams.yaml"
    path.write_text(text)
    return path


def test_gpt2_xl_file_reads_as_published():
    got = read(authors_file("gpt2-xl"))
    assert got.changes["layer"] == 17 and got.changes["v_num_grad_steps"] == 20
    assert got.changes["v_lr"] == 0.5 and isinstance(got.changes["v_lr"], float)  # written 5e-1
    assert got.changes["v_weight_decay"] == 0.5 and got.changes["clamp_norm_factor"] == 4.0
    assert got.changes["context_template_length_params"] == [[5, 10], [10, 10]]
    assert (got.setting, got.variant, got.test_prefix) == ("paper", "rome", False)


def test_llama_7b_file_reads_as_published():
    got = read(authors_file("llama-7b"))
    assert (got.changes["layer"], got.changes["v_num_grad_steps"]) == (5, 25)
    assert got.changes["v_weight_decay"] == pytest.approx(0.001) and isinstance(got.changes["v_weight_decay"], float)
    assert got.setting == "paper"


@pytest.mark.parametrize("stem", sorted(AUTHORS_FILES))
def test_authors_files_match_the_published_settings_here(stem):
    """Every value the authors' file sets equals this library's own entry for that model, and it names the paper
    setting (no C⁻¹)."""
    got = read(authors_file(stem))
    assert got.setting == "paper"
    published = models.hparams_for(AUTHORS_FILES[stem])
    assert published.replace(**got.changes) == published
    assert set(got.changes) == {"layer", "v_num_grad_steps", "v_lr", "v_weight_decay", "clamp_norm_factor",
                                "kl_factor", "context_template_length_params", "mom2_n_samples"}


def test_every_key_of_the_authors_files_is_known():
    keys = set()
    for stem in AUTHORS_FILES:
        keys |= {line.split(":")[0] for line in authors_file(stem).read_text().splitlines()
                 if line and not line.startswith("#")}
    assert keys - IGNORED_KEYS == {"alg_name", "layers", "fact_token", "v_num_grad_steps", "v_lr", "v_weight_decay",
                                   "clamp_norm_factor", "kl_factor", "mom2_adjustment", "mom2_n_samples",
                                   "context_template_length_params", "if_c_rome", "if_prefix"}


def test_scientific_notation_and_flags(tmp_path):
    got = read(write(tmp_path, "v_lr: 5e-1\nmom2_n_samples: 1e5\nkl_factor: 6.25e-2\n"
                               "mom2_adjustment: true\nif_c_rome: true\nif_prefix: true\n"))
    assert got.changes == {"v_lr": 0.5, "mom2_n_samples": 100000, "kl_factor": 0.0625}
    assert isinstance(got.changes["mom2_n_samples"], int)
    assert (got.setting, got.variant, got.test_prefix) == ("original", "c-rome", True)
    assert (parse({}).setting, parse({}).variant, parse({}).test_prefix) == (None, None, None)  # the file is silent


@pytest.mark.parametrize("text, message", [
    ("layers: [5]\nv_lr_typo: 0.5\n", "unknown key 'v_lr_typo'"),
    ("v_lr: fast\n", "v_lr: 'fast' is not a number"),
    ("v_lr: true\n", "v_lr: True is not a number"),
    ("v_num_grad_steps: 2.5\n", "v_num_grad_steps: 2.5 is not an integer"),
    ("layers: [5, 6]\n", "ROME edits one layer"),
    ("layers: []\n", "ROME edits one layer"),
    ("fact_token: last\n", "fact_token: 'last'; only 'subject_last'"),
    ("alg_name: MEMIT\n", "only ROME files"),
    ("mom2_adjustment: 'no'\n", "mom2_adjustment: 'no' is not true or false"),
    ("context_template_length_params: [5, 10]\n", "[length, count] pairs"),
    ("- layers\n", "expected a mapping"),
])
def test_unusable_file_is_a_clear_error_naming_file_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(HParamsFileError) as info:
        read(path)
    assert isinstance(info.value, ValueError)
    assert message in str(info.value) and str(path) in str(info.value)


def test_plumbing_keys_are_ignored(tmp_path):
    got = read(write(tmp_path, "alg_name: ROME\nmodel_name: ./x\ndevice: 0\nfact_token: subject_last\n"
                               "rewrite_module_tmp: 'model.layers.{}.mlp.down_proj'\nbatch_size: 1\nmax_length: 40\n"))
    assert got.changes == {} and got.setting is None


def edit_args(*extra):
    return cli._parser().parse_args(["edit", "--prompt", "{} is", "--subject", "X", "--target-new", "Y", *extra])


def test_cli_flags_win_over_the_file():
    file = parse({"mom2_adjustment": True, "if_c_rome": True, "if_prefix": True})
    from_file = edit_args("--hparams", "f.yaml")
    cli.resolve_defaults(from_file, file)
    assert (from_file.setting, from_file.variant, from_file.test_prefix) == ("original", "c-rome", True)
    flags = edit_args("--hparams", "f.yaml", "--setting", "paper", "--variant", "rome", "--no-test-prefix")
    cli.resolve_defaults(flags, file)
    assert (flags.setting, flags.variant, flags.test_prefix) == ("paper", "rome", False)
    bare = edit_args()
    cli.resolve_defaults(bare, None)
    assert (bare.setting, bare.variant, bare.test_prefix) == (stats.DEFAULT_SETTING, "rome", False)
    risk = cli._parser().parse_args(["risk", "--prompt", "{} is", "--subject", "X"])
    cli.resolve_defaults(risk, file)
    assert risk.setting == "original" and not hasattr(risk, "variant")


def test_cli_bad_file_exits_2_naming_it(tmp_path, capsys):
    path = write(tmp_path, "layers: [5]\nsurprise: 1\n")
    with pytest.raises(SystemExit) as info:
        cli.main(["risk", "--prompt", "{} is", "--subject", "X", "--hparams", str(path)])
    assert info.value.code == 2
    assert f"--hparams: {path}: unknown key 'surprise'" in capsys.readouterr().err


@pytest.mark.model
def test_missing_keys_take_the_model_defaults_and_the_setting_stays_with_the_c(tmp_path):
    path = write(tmp_path, "layers: [4]\nv_lr: 1e-1\nmom2_adjustment: true\n")
    bundle = models.load_model("smollm2-135m", device="cpu", hparams=path)
    assert bundle.hparams == models.hparams_for("smollm2-135m").replace(layer=4, v_lr=0.1)
    assert read(path).setting == "original"  # the C its edits are given: stats.covariance(bundle, "original")


@pytest.mark.model
def test_file_layer_outside_the_model_is_a_clear_error(tmp_path):
    path = write(tmp_path, "layers: [30]\n")  # SmolLM2-135M has layers 0..29
    with pytest.raises(HParamsFileError, match="layers: 30 is outside"):
        models.load_model("smollm2-135m", device="cpu", hparams=path)


@pytest.mark.model
def test_cli_load_uses_the_file_and_the_layer_flag_wins(tmp_path):
    path = write(tmp_path, "layers: [4]\nclamp_norm_factor: 10\nv_num_grad_steps: 7\nif_c_rome: true\n")
    templates = tmp_path / "templates.json"
    templates.write_text(json.dumps(["{}", "Hello. {}"]))
    args = edit_args("--hparams", str(path), "--templates", str(templates), "--profile", "smoke", "--json")
    bundle, _, _ = cli._load(args)
    assert (bundle.hparams.layer, bundle.hparams.clamp_norm_factor, bundle.hparams.v_num_grad_steps) == (4, 10.0, 7)
    assert (args.variant, args.setting) == ("c-rome", "paper")
    flagged = edit_args("--hparams", str(path), "--templates", str(templates), "--profile", "smoke", "--json",
                        "--layer", "8", "--variant", "rome")
    bundle, _, _ = cli._load(flagged)
    assert bundle.hparams.layer == 8 and flagged.variant == "rome"
