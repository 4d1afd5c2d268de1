# Helpers shared by every stage: config validation, wildcard constraints and the
# functions that list the files a configuration asks for.
import os
import re

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from rmtlens.estimators import ridge_grid, sample_size_grid
from rmtlens.kernels import entk_tiles
from rmtlens.io import PARTIAL_DIR_ENV, remove_partials
from rmtlens.workflow import (
    ConfigError,
    eigh_job_bytes,
    check_config,
    check_file_representations,
    check_input_files,
    file_representation_units,
)

# Jobs write temporary files here, never under results/; a killed job's leftovers
# are removed when the next run starts.
PARTIAL_DIR = ".partial"
os.environ.setdefault(PARTIAL_DIR_ENV, PARTIAL_DIR)


def remove_partial_leftovers():
    """Delete temporary files of killed jobs. Snakemake runs only the main Snakefile's
    onstart handler: a workflow that uses this one as a module calls this function from
    its own (``onstart: rmtlens.remove_partial_leftovers()``, README)."""
    remove_partials(PARTIAL_DIR)


onstart:
    remove_partial_leftovers()


validate(config, schema="../schemas/config.schema.yaml")


# Cross-field checks the schema cannot express and the input files the configuration
# names (rmtlens.workflow.config_checks); a cluster job re-reads the Snakefile and skips
# the model-name check (it imports timm) and the file check (its main process did both).
try:
    check_config(config, model_names=workflow.is_main_process)
    check_file_representations(config, read_files=workflow.is_main_process)
    if workflow.is_main_process:
        check_input_files(config)
except ConfigError as err:
    raise WorkflowError(str(err)) from None

# Every output of a run lies under its own folders, named by `run`: results/<run>/,
# logs/<run>/ and benchmarks/<run>/ (rule files write the {run} wildcard, helpers below
# RESULTS), so runs of different configurations sit side by side. Downloads in
# resources/ are shared.
RUN = config["run"]
RESULTS = f"results/{RUN}"


wildcard_constraints:
    run=re.escape(RUN),
    dataset=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    backbone=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    weights=r"init|pretrained|trained|file",
    kernel=r"features|entk",
    n=r"\d+",
    seed=r"\d+",
    row=r"\d+",
    col=r"\d+",
    task=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


def canonical(value):
    """Dicts with sorted keys, recursively: Snakemake compares params by their text,
    so the key order of a config file must not make a job look changed."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def minutes_for(n, seconds_at_8000, power, attempt=1):
    """A runtime request (minutes) for an O(n^power) job: four times its measured time on
    2 cores at n = 8000, scaled, at least 2 minutes, doubled on each retry."""
    return int(
        max(2, 4 * seconds_at_8000 * (n / 8000) ** power / 60) * 2 ** (attempt - 1)
    )


def scientific_fields(dataset):
    """A dataset's fields that change its images (not its display label or backbone list:
    changing those reruns nothing)."""
    ds = config["datasets"][dataset]
    return canonical({k: v for k, v in ds.items() if k not in ("label", "backbones")})


def archive_of(dataset):
    ds = config["datasets"][dataset]
    return [ds["archive"]] if ds["source"] == "imagefolder" else []


def dataset_spec(wildcards):
    return scientific_fields(wildcards.dataset)


def dataset_archive(wildcards):
    return archive_of(wildcards.dataset)


def source_task_spec(wildcards):
    """A source task with the scientific fields of the dataset it draws from."""
    task = config["source_tasks"][wildcards.task]
    return canonical(dict(task, dataset_spec=scientific_fields(task["dataset"])))


def source_task_archive(wildcards):
    return archive_of(config["source_tasks"][wildcards.task]["dataset"])


def pretrain_spec(wildcards):
    bb = backbone_spec(wildcards)
    return canonical(
        dict(
            bb["pretrain"],
            model=bb["model"],
            image_size=bb["image_size"],
            model_kwargs=bb["model_kwargs"],
        )
    )


def pretrain_source_task(wildcards):
    return f"{RESULTS}/source_tasks/{backbone_spec(wildcards)['pretrain']['task']}.npz"


def weights_inputs(wildcards):
    """Files the backbone's weights come from: the workflow's pretraining, or a local file."""
    bb = backbone_spec(wildcards)
    if wildcards.weights == "trained":
        return {
            "trained": f"{RESULTS}/weights/{wildcards.backbone}/trained.safetensors"
        }
    if wildcards.weights == "pretrained" and bb["pretrained_file"]:
        return {"pretrained_file": bb["pretrained_file"]}
    return {}


def per_seed(pattern):
    """``pattern`` for every subsample seed, its other wildcards kept: the files of one
    eigh or factor job, which covers one sample size n and every seed (one interpreter
    start instead of one per seed; a file per (n, seed) as before)."""
    return expand(pattern, seed=config["seeds"], allow_missing=True)


def entk_layout(dataset):
    ds = config["datasets"][dataset]
    return entk_tiles(ds["n_pool"], ds["n_test"], config["entk"]["tile_size"])


# Below these sizes a torch job does not keep a second thread busy: on the default run's
# digits, embedding 1,400 images and a 1,400 x 1,000 eNTK tile used 1.1 of 2 threads
# (benchmark cpu_time over wall time). Such jobs take one core, so two run side by side
# instead of one holding both cores half idle.
SMALL_EMBED_IMAGES = 2048
SMALL_TILE_ENTRIES = 2048 * 2048


def embed_threads(wildcards):
    ds = config["datasets"][wildcards.dataset]
    return 1 if ds["n_pool"] + ds["n_test"] < SMALL_EMBED_IMAGES else 2


def entk_tile_threads(wildcards):
    tile = entk_tile(wildcards)
    (r0, r1), (c0, c1) = tile["rows"], tile["cols"]  # (start, stop) ranges
    return 1 if (r1 - r0) * (c1 - c0) < SMALL_TILE_ENTRIES else 2


def entk_tile(wildcards):
    """The tile a job computes: its row and column ranges (mirrored tiles are never jobs)."""
    for t in entk_layout(wildcards.dataset):
        if (t.row, t.col) == (
            int(wildcards.row),
            int(wildcards.col),
        ) and t.mirror is None:
            return dict(rows=list(t.rows), cols=list(t.cols))
    raise WorkflowError(
        f"no computed eNTK tile r{wildcards.row}_c{wildcards.col} for dataset {wildcards.dataset}"
    )


def entk_spec(wildcards):
    """The entk section, with the backbone's own ``entk_dtype`` (when set) as its dtype."""
    dtype = backbone_spec(wildcards)["entk_dtype"] or config["entk"]["dtype"]
    return canonical(dict(config["entk"], dtype=dtype))


def kernel_accuracy(wildcards):
    """The accuracy record beside a kernel (SPEC §2)."""
    return f"{RESULTS}/kernels/{wildcards.dataset}/{wildcards.backbone}/{wildcards.weights}/{wildcards.kernel}.accuracy.json"


def accuracy_params():
    """What turns a kernel's accuracy into an eigenvalue floor (SPEC §2)."""
    return dict(
        rcond=config["ridge"]["rcond"], safety=float(config["accuracy"]["safety"])
    )


def entk_tile_files(wildcards):
    return [
        f"{RESULTS}/kernels/{wildcards.dataset}/{wildcards.backbone}/{wildcards.weights}/entk_tiles/r{t.row}_c{t.col}.npy"
        for t in entk_layout(wildcards.dataset)
        if t.mirror is None
    ]


def trained_backbones():
    return [b for b, bb in config["backbones"].items() if "trained" in bb["weights"]]


def n_pool(wildcards):
    return config["datasets"][wildcards.dataset]["n_pool"]


def backbone_spec(wildcards):
    return config["backbones"][wildcards.backbone]


def sample_sizes(dataset):
    grid = config["sample_sizes"]
    n_max = grid["max"] or config["datasets"][dataset]["n_pool"]
    return sample_size_grid(grid["min"], n_max, grid["num"])


def scaling_n_range(dataset):
    """(n_lo, n_hi): the smallest and largest sample sizes of `dataset` inside
    `scaling.n_window`, which the power-law fit window `n_range` follows (SPEC §5)."""
    window = config["scaling"]["n_window"]
    lo, hi = window["min"] or 0, window["max"] or float("inf")
    inside = [n for n in sample_sizes(dataset) if lo <= n <= hi]
    return [int(min(inside)), int(max(inside))] if inside else None


def relative_ridges():
    r = config["ridge"]
    return [float(x) for x in ridge_grid(r["min"], r["max"], r["num"], r["ridgeless"])]


def dataset_backbones(dataset):
    """Backbones run on a dataset: its `backbones` list, or all of them (none on a
    dataset given as arrays: it has no images)."""
    if config["datasets"][dataset]["source"] == "arrays":
        return []
    return config["datasets"][dataset]["backbones"] or list(config["backbones"])


def kernel_units():
    """Every (dataset, backbone, weights, kernel) the configuration asks for: the
    backbones', then the representations from files (weights `file`, arrays.smk)."""
    return [
        dict(dataset=d, backbone=b, weights=w, kernel=k)
        for d in config["datasets"]
        for b in dataset_backbones(d)
        for w in config["backbones"][b]["weights"]
        for k in config["backbones"][b]["kernels"]
    ] + file_representation_units(config)


def unit_files(pattern):
    """``pattern`` filled in for every kernel unit (and this run), in the order of
    :func:`kernel_units`."""
    return [pattern.format(run=RUN, **u) for u in kernel_units()]


def ridge_path_files(wildcards=None):
    return [
        f"{RESULTS}/ridge/{u['dataset']}/{u['backbone']}/{u['weights']}/{u['kernel']}.parquet"
        for u in kernel_units()
    ]


def ridge_eigh_files(wildcards):
    """A ridge_path job's decompositions: every sample size, then every seed, in the order
    of its params ``sizes`` and ``seeds``."""
    unit = f"{wildcards.dataset}/{wildcards.backbone}/{wildcards.weights}/{wildcards.kernel}"
    return [
        f"{RESULTS}/eigh/{unit}/n{n}_s{s}.npz"
        for n in sample_sizes(wildcards.dataset)
        for s in config["seeds"]
    ]


def clean_targets():
    """How clean targets are built (kind, positive classes): ``targets.noise`` left out, so
    changing the noise study never reruns a ridge path, theory or extension job."""
    return canonical({k: v for k, v in config["targets"].items() if k != "noise"})


def dataset_labels():
    return {name: ds.get("label", name) for name, ds in config["datasets"].items()}


def joined(values):
    """Distinct values in first-seen order, as one comma-separated label."""
    return ", ".join(dict.fromkeys(str(v) for v in values))


def scope_labels(study=None):
    """What a report entry covers, as filterable labels: the dataset(s), backbone(s),
    weights and kernel(s). By default every kernel unit of the configuration (the
    summary figures and tables aggregate them all); a study names its own scope (none
    when it is disabled: its section may then lack the fields that name it)."""
    if study in ("double_descent", "linearisation") and not config[study]["enabled"]:
        return {}
    if study == "double_descent":
        dd = config["double_descent"]
        backbone, _, weights = dd["linear"]["embedding"].partition("/")
        return dict(
            dataset=dd["dataset"],
            backbone=backbone,
            weights=weights,
            kernel=f"random features on {dd['inputs']}, linear on embeddings",
        )
    if study == "linearisation":
        lin = config["linearisation"]
        return dict(
            dataset=lin["dataset"],
            backbone=f"small CNN (width {lin['width']}, depth {lin['depth']})",
            weights="init, SGD-trained",
            kernel="entk",
        )
    if study == "pretraining":
        names = trained_backbones()
        tasks = [config["backbones"][b]["pretrain"]["task"] for b in names]
        return dict(
            dataset=joined(config["source_tasks"][t]["dataset"] for t in tasks),
            backbone=joined(names),
            weights="trained",
        )
    units = kernel_units()
    return {
        k: joined(u[k] for u in units)
        for k in ("dataset", "backbone", "weights", "kernel")
    }


def report_labels(name, fmt=None, kind="figure", study=None):
    """Labels of a report() entry: what it is (``kind``: figure or table), its scope
    (:func:`scope_labels`) and, for figures, the file format (the report shows it as a
    png/svg toggle)."""
    labels = {kind: name, **scope_labels(study)}
    if fmt is not None:
        labels["format"] = fmt
    return labels


FIGURES = [
    "risk_vs_n",
    "gcv_vs_risk",
    "risk_vs_lambda",
    "estimators",
    "representations",
    "scaling",
    "local_law",
    "power_laws",
    "gcv_local_law",
]


def pretraining_outputs():
    if not trained_backbones():
        return []
    return [f"{RESULTS}/figures/pretraining.{ext}" for ext in ("png", "svg")]


def double_descent_embeddings(wildcards):
    """The embedding file of the linear-ridge sweep (and of random features on embeddings)."""
    spec = config["double_descent"]
    files = {
        "linear": f"{RESULTS}/embeddings/{spec['dataset']}/{spec['linear']['embedding']}.npy"
    }
    if spec["inputs"] != "pixels":
        files["rf"] = f"{RESULTS}/embeddings/{spec['dataset']}/{spec['inputs']}.npy"
    return files


def extension_outputs():
    out = []
    if config["double_descent"]["enabled"]:
        out += [
            f"{RESULTS}/tables/double_descent.csv",
            f"{RESULTS}/figures/double_descent.png",
        ]
    if config["learning_dynamics"]["enabled"]:
        out += [
            f"{RESULTS}/tables/learning_dynamics.csv",
            f"{RESULTS}/figures/learning_dynamics.png",
        ]
    if config["linearisation"]["enabled"]:
        out += [
            f"{RESULTS}/tables/linearisation_accuracy.csv",
            f"{RESULTS}/figures/linearisation.png",
        ]
    return out


def final_outputs():
    return [
        *extension_outputs(),
        f"{RESULTS}/tables/ridge.parquet",
        f"{RESULTS}/tables/gcv_accuracy.csv",
        f"{RESULTS}/tables/best_risk.csv",
        *pretraining_outputs(),
        f"{RESULTS}/tables/estimators.csv",
        f"{RESULTS}/tables/representations.csv",
        f"{RESULTS}/tables/scaling.csv",
        f"{RESULTS}/tables/local_law.csv",
        f"{RESULTS}/tables/claims.csv",
        *[f"{RESULTS}/figures/{f}.{ext}" for f in FIGURES for ext in ("png", "svg")],
        *science_outputs(),
    ]


# The label-noise study, ridge selection and learnability (rules in noise.smk).
def noise_enabled():
    return config["targets"]["noise"]["enabled"]


def science_outputs():
    out = [
        f"{RESULTS}/tables/ridge_selection.csv",
        f"{RESULTS}/tables/ridge_regret.csv",
        f"{RESULTS}/tables/learnability.csv",
        *[
            f"{RESULTS}/figures/{f}.{ext}"
            for f in ("ridge_selection", "learnability")
            for ext in ("png", "svg")
        ],
    ]
    if noise_enabled():
        out += [
            f"{RESULTS}/tables/noise_accuracy.csv",
            f"{RESULTS}/tables/noise_peaks.csv",
            *[
                f"{RESULTS}/figures/{f}.{ext}"
                for f in ("noise", "noise_accuracy")
                for ext in ("png", "svg")
            ],
        ]
    return out


def noise_subsamples(wildcards):
    """(n, seed) of the noise study: the grid up to ``targets.noise.n_max`` (checked by
    check_config to keep at least the smallest n)."""
    n_max = config["targets"]["noise"]["n_max"]
    return [
        (n, s)
        for n in sample_sizes(wildcards.dataset)
        if n_max is None or n <= n_max
        for s in config["seeds"]
    ]


def noise_eigh_files(wildcards):
    return [
        f"{RESULTS}/eigh/{wildcards.dataset}/{wildcards.backbone}/{wildcards.weights}/{wildcards.kernel}/n{n}_s{s}.npz"
        for n, s in noise_subsamples(wildcards)
    ]


# Feature kernels on the low-rank path (lowrank.smk) read embeddings, not a kernel file.
def kernel_source(wildcards):
    """A ridge/flow job's kernel input: the embeddings for `features`, else the kernel file."""
    unit = f"{wildcards.dataset}/{wildcards.backbone}/{wildcards.weights}"
    if wildcards.kernel == "features":
        return {"embeddings": f"{RESULTS}/embeddings/{unit}.npy"}
    return {"kernel": f"{RESULTS}/kernels/{unit}/{wildcards.kernel}.npy"}


def spectral_mem_mb(wildcards, n):
    """Memory (MB) of a job holding an n-point factorisation: n x n dense, n x p (p ≤ 1024
    assumed for embeddings) on the low-rank path, plus the embeddings themselves; rules
    without a kernel wildcard (feature_accuracy) read embeddings only."""
    if getattr(wildcards, "kernel", "features") == "features":
        ds = config["datasets"][wildcards.dataset]
        return 2000 + 8 * 1024 * (4 * n + ds["n_pool"] + ds["n_test"]) // 10**6
    return 2000 + 48 * n**2 // 10**6


# Rules in spectra.smk: one pool decomposition per dense kernel, permuted for
# the n = N_pool subsamples; eigh jobs declare their measured memory.


def pool_eigh_file(wildcards):
    return f"{RESULTS}/eigh/{wildcards.dataset}/{wildcards.backbone}/{wildcards.weights}/{wildcards.kernel}/pool.npz"


def eigh_source(wildcards):
    """An eigh job's input: the pool's eigendecomposition at n = N_pool, else the kernel."""
    if int(wildcards.n) == n_pool(wildcards):
        return {"pool_eigh": pool_eigh_file(wildcards)}
    unit = f"{wildcards.dataset}/{wildcards.backbone}/{wildcards.weights}"
    return {"kernel": f"{RESULTS}/kernels/{unit}/{wildcards.kernel}.npy"}


def eigh_mem_mb(wildcards, n, permuted=False):
    """Memory (MB) of an eigh job at size n: its peak above the interpreter
    (rmtlens.workflow.eigh_job_bytes, measured by tests/test_eigh.py) plus 1000 MB for
    the interpreter and libraries."""
    ds = config["datasets"][wildcards.dataset]
    return 1000 + eigh_job_bytes(n, ds["n_pool"], ds["n_test"], permuted) // 10**6
