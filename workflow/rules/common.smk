# Helpers shared by every stage: config validation, wildcard constraints and the
# functions that list the files a configuration asks for.
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from rmtlens.grids import ridge_grid, sample_size_grid


validate(config, schema="../schemas/config.schema.yaml")


def config_error(field, message):
    raise WorkflowError(f"invalid configuration at '{field}': {message}")


def check_config(cfg):
    """Checks the schema cannot express: cross-field ranges and known model names."""
    for name, ds in cfg["datasets"].items():
        n_max = cfg["sample_sizes"]["max"]
        if n_max is not None and n_max > ds["n_pool"]:
            config_error("sample_sizes.max", f"{n_max} exceeds datasets.{name}.n_pool = {ds['n_pool']}")
        if cfg["sample_sizes"]["min"] > (n_max or ds["n_pool"]):
            config_error("sample_sizes.min", f"{cfg['sample_sizes']['min']} exceeds the largest sample size {n_max or ds['n_pool']} of dataset {name}")
    if cfg["ridge"]["min"] > cfg["ridge"]["max"]:
        config_error("ridge.min", f"{cfg['ridge']['min']} exceeds ridge.max = {cfg['ridge']['max']}")
    if cfg["targets"]["kind"] == "binary" and not cfg["targets"]["positive_classes"]:
        config_error("targets.positive_classes", "kind 'binary' needs the classes labelled +1")
    import timm  # imported here: only a configuration check needs it

    for name, bb in cfg["backbones"].items():
        if not timm.is_model(bb["model"]):
            config_error(f"backbones.{name}.model", f"unknown timm model {bb['model']!r}")


check_config(config)


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    backbone=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    weights=r"init|pretrained|trained",
    kernel=r"features|entk",
    n=r"\d+",
    seed=r"\d+",


def canonical(value):
    """Dicts with sorted keys, recursively: Snakemake compares params by their text,
    so the key order of a config file must not make a job look changed."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def dataset_spec(wildcards):
    """The scientific fields of a dataset (not its display label: relabelling reruns nothing)."""
    ds = config["datasets"][wildcards.dataset]
    return canonical({k: v for k, v in ds.items() if k != "label"})


def dataset_archive(wildcards):
    ds = config["datasets"][wildcards.dataset]
    return [ds["archive"]] if ds["source"] == "imagefolder" else []


def n_pool(wildcards):
    return config["datasets"][wildcards.dataset]["n_pool"]


def backbone_spec(wildcards):
    return config["backbones"][wildcards.backbone]


def sample_sizes(dataset):
    grid = config["sample_sizes"]
    n_max = grid["max"] or config["datasets"][dataset]["n_pool"]
    return sample_size_grid(grid["min"], n_max, grid["num"])


def relative_ridges():
    r = config["ridge"]
    return [float(x) for x in ridge_grid(r["min"], r["max"], r["num"], r["ridgeless"])]


def kernel_units():
    """Every (dataset, backbone, weights, kernel) the configuration asks for."""
    return [
        dict(dataset=d, backbone=b, weights=w, kernel=k)
        for d in config["datasets"]
        for b, bb in config["backbones"].items()
        for w in bb["weights"]
        for k in bb["kernels"]
    ]


def ridge_path_files(wildcards=None):
    return [
        f"results/ridge/{u['dataset']}/{u['backbone']}/{u['weights']}/{u['kernel']}/n{n}_s{s}.parquet"
        for u in kernel_units()
        for n in sample_sizes(u["dataset"])
        for s in config["seeds"]
    ]


def pool_spectrum_files(wildcards=None):
    return [
        f"results/spectra/{u['dataset']}/{u['backbone']}/{u['weights']}/{u['kernel']}/pool.npz"
        for u in kernel_units()
    ]


def dataset_labels():
    return {name: ds.get("label", name) for name, ds in config["datasets"].items()}


FIGURES = ["risk_vs_n", "gcv_vs_risk", "risk_vs_lambda"]


def final_outputs():
    return [
        "results/tables/ridge.parquet",
        "results/tables/gcv_accuracy.csv",
        *pool_spectrum_files(),
        *[f"results/figures/{f}.{ext}" for f in FIGURES for ext in ("png", "svg")],
    ]
