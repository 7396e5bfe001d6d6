from pathlib import Path

import pytest

from wkdist import REFERENCE_QM9, KernelSettings
from wkdist.app.config import (
    DEFAULT_TILE_SIZE,
    SECTIONS,
    Field,
    Section,
    load_config,
    parse_config,
    positive_int,
)
from wkdist.errors import ConfigError

GOOD = """
[data]
path = "mols.xyz"
target = "energy"
n_train = 10
n_test = 5
seed = 3
unit = "eV"
[kernel]
cutoff = 4.0
nu_max = 2
[compute]
tile_size = 4
cluster = "tcp://127.0.0.1:8786"
workers = 3
threads_per_worker = 2
[store]
path = "out/store.zarr"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_full_config(tmp_path):
    config = load_config(write(tmp_path, GOOD))
    assert config.data.path == tmp_path / "mols.xyz"  # relative to the config file
    assert (config.data.n_train, config.data.n_test, config.data.seed) == (10, 5, 3)
    assert config.data.unit == "eV"
    assert config.kernel == KernelSettings(cutoff=4.0, nu_max=2)
    assert config.compute.tile_size == 4 and config.compute.workers == 3
    assert config.compute.cluster == "tcp://127.0.0.1:8786"
    assert config.store.path == tmp_path / "out/store.zarr"
    assert config["compute"] is config.compute


def test_defaults_and_qm9(tmp_path):
    config = load_config(write(tmp_path, '[data]\nsource = "qm9"\nn_train = 5\nn_test = 2\n'
                                         '[store]\npath = "s"\n'))
    assert config.data.source == "qm9" and config.data.target == "U0"
    assert config.kernel == KernelSettings()
    assert config.compute.tile_size == DEFAULT_TILE_SIZE and config.compute.cluster == "local"


def test_reference_settings_are_one_line_away(tmp_path):
    """README: the authors' settings (REFERENCE_QM9) from the defaults in one config line."""
    config = load_config(write(tmp_path, "kernel = { cutoff = 5.0, cutoff_smoothing = 0.5 }\n"
                                         '[data]\nsource = "qm9"\nn_train = 5\nn_test = 2\n'
                                         '[store]\npath = "s"\n'))
    assert config.kernel == REFERENCE_QM9 != KernelSettings()


def test_train_test_files(tmp_path):
    config = load_config(write(tmp_path, '[data]\ntrain = "a.xyz"\ntest = "b.xyz"\n'
                                         'target = "energy"\n[store]\npath = "s"\n'))
    assert config.data.train == tmp_path / "a.xyz" and config.data.n_train is None


@pytest.mark.parametrize("replace, message", [
    (("tile_size = 4", "tile_size = 'x'"),
     "[compute] tile_size: expected a positive integer, got 'x'"),
    (("tile_size = 4", "tile_size = 0"), "[compute] tile_size: expected a positive integer, got 0"),
    (("workers = 3", "wokers = 3"), "[compute] wokers: unknown key"),
    (("cutoff = 4.0", "cutoff = -1.0"), "[kernel] cutoff: expected a positive length"),
    (("nu_max = 2", "nu_max = 2.5"), "[kernel] nu_max: expected an integer >= 0, got 2.5"),
    (("cluster = \"tcp://127.0.0.1:8786\"", "cluster = \"mars\""), "[compute] cluster: expected"),
    (("n_train = 10", "n_train = true"), "[data] n_train: expected a positive integer, got True"),
    (("[store]", "[stor]"), "[stor]: unknown section"),
    (("seed = 3", "seed = -1"), "[data] seed: expected an integer >= 0, got -1"),
    (("target = \"energy\"\n", ""), "[data] target: expected the name"),
    (("n_test = 5\n", ""), "[data] n_test: expected a positive integer, got none"),
])
def test_bad_values_name_the_key(tmp_path, replace, message):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, GOOD.replace(*replace)))
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_missing_sections_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match=r"^\[store\]: expected this section"):
        load_config(write(tmp_path, GOOD.split("[store]")[0]))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[data\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match=r"\[data\] path: expected either path or train/test"):
        load_config(write(tmp_path, GOOD.replace('path = "mols.xyz"',
                                                 'path = "m"\ntrain = "a"\ntest = "b"')))


def test_slurm_passthrough(tmp_path):
    # [compute.slurm] is a sub-table: it goes after [compute], before [store]
    text = GOOD.replace('cluster = "tcp://127.0.0.1:8786"', 'cluster = "slurm"').replace(
        "[store]", '[compute.slurm]\nqueue = "debug"\nwalltime = "00:10:00"\n[store]')
    config = load_config(write(tmp_path, text))
    assert config.compute.slurm == {"queue": "debug", "walltime": "00:10:00"}
    with pytest.raises(ConfigError, match=r"\[compute\] slurm: expected only with cluster"):
        load_config(write(tmp_path, text.replace('cluster = "slurm"', 'cluster = "local"')))


def test_a_section_is_checked_by_its_schema(tmp_path, monkeypatch):
    monkeypatch.setitem(SECTIONS, "fit", Section({"folds": Field(positive_int)},
                                                  lambda values, where: dict(values)))
    config = load_config(write(tmp_path, GOOD + "[fit]\nfolds = 5\n"))
    assert config["fit"] == {"folds": 5}
    with pytest.raises(ConfigError, match=r"^\[fit\] folds: expected a positive integer"):
        load_config(write(tmp_path, GOOD + "[fit]\nfolds = 0\n"))


def test_parse_config_dict():
    config = parse_config({"data": {"source": "qm9", "n_train": 1, "n_test": 1},
                           "store": {"path": "/x"}})
    assert config.store.path == Path("/x")
