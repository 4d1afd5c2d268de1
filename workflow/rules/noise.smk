# Beyond the papers: label noise, ridge selection, per-mode learnability.


rule noise_study:
    input:
        unpack(kernel_source),
        spectrum="results/{run}/spectra/{dataset}/{backbone}/{weights}/{kernel}/pool.npz",
        dataset="results/{run}/datasets/{dataset}.npz",
        eigh=noise_eigh_files,
        accuracy=kernel_accuracy,
    output:
        "results/{run}/noise/{dataset}/{backbone}/{weights}/{kernel}.parquet",
    log:
        "logs/{run}/noise_study/{dataset}/{backbone}/{weights}/{kernel}.log",
    benchmark:
        "benchmarks/{run}/noise_study/{dataset}/{backbone}/{weights}/{kernel}.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    resources:
        mem_mb=lambda wc: (
            spectral_mem_mb(wc, max(n for n, _ in noise_subsamples(wc)))
            if wc.kernel == "features"
            else 2000 + 64 * max(n for n, _ in noise_subsamples(wc)) ** 2 // 10**6
        ),
        runtime=lambda wc, attempt: minutes_for(
            max(n for n, _ in noise_subsamples(wc)), 600, 2, attempt
        ),
    params:
        subsamples=noise_subsamples,
        targets=clean_targets(),
        noise=canonical(config["targets"]["noise"]),
        lambdas_rel=relative_ridges(),
        accuracy=accuracy_params(),
        floor_tolerance=float(config["accuracy"]["floor_tolerance"]),
    script:
        "../scripts/noise_study.py"


rule noise_summary:
    input:
        unit_files(
            "results/{run}/noise/{dataset}/{backbone}/{weights}/{kernel}.parquet"
        ),
    output:
        table="results/{run}/tables/noise.parquet",
        accuracy=report(
            "results/{run}/tables/noise_accuracy.csv",
            caption="../report/table_noise_accuracy.rst",
            category="Summary tables",
            subcategory="Label noise",
            labels=report_labels("estimator accuracy under label noise", kind="table"),
        ),
        peaks=report(
            "results/{run}/tables/noise_peaks.csv",
            caption="../report/table_noise_peaks.rst",
            category="Summary tables",
            subcategory="Label noise",
            labels=report_labels(
                "sample-wise double descent under label noise", kind="table"
            ),
        ),
        png=report(
            "results/{run}/figures/noise.png",
            caption="../report/noise.rst",
            category="Label noise",
            labels=report_labels("excess risk versus n per noise level", "png"),
        ),
        svg=report(
            "results/{run}/figures/noise.svg",
            caption="../report/noise.rst",
            category="Label noise",
            labels=report_labels("excess risk versus n per noise level", "svg"),
        ),
        accuracy_png=report(
            "results/{run}/figures/noise_accuracy.png",
            caption="../report/noise_accuracy.rst",
            category="Label noise",
            labels=report_labels("estimator accuracy per noise level", "png"),
        ),
        accuracy_svg=report(
            "results/{run}/figures/noise_accuracy.svg",
            caption="../report/noise_accuracy.rst",
            category="Label noise",
            labels=report_labels("estimator accuracy per noise level", "svg"),
        ),
    log:
        "logs/{run}/noise_summary.log",
    benchmark:
        "benchmarks/{run}/noise_summary.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    params:
        n_min=config["analysis"]["n_min"],
        dataset_labels=dataset_labels(),
    script:
        "../scripts/noise_summary.py"


rule ridge_selection:
    input:
        joined="results/{run}/tables/theory.parquet",
    output:
        table=report(
            "results/{run}/tables/ridge_selection.csv",
            caption="../report/table_ridge_selection.rst",
            category="Summary tables",
            subcategory="Ridge selection",
            labels=report_labels("ridge selection", kind="table"),
        ),
        regret=report(
            "results/{run}/tables/ridge_regret.csv",
            caption="../report/table_ridge_regret.rst",
            category="Summary tables",
            subcategory="Ridge selection",
            labels=report_labels("ridge-selection regret", kind="table"),
        ),
        png=report(
            "results/{run}/figures/ridge_selection.png",
            caption="../report/ridge_selection.rst",
            category="Ridge selection",
            labels=report_labels("selected ridge versus n", "png"),
        ),
        svg=report(
            "results/{run}/figures/ridge_selection.svg",
            caption="../report/ridge_selection.rst",
            category="Ridge selection",
            labels=report_labels("selected ridge versus n", "svg"),
        ),
    log:
        "logs/{run}/ridge_selection.log",
    benchmark:
        "benchmarks/{run}/ridge_selection.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    params:
        n_min=config["analysis"]["n_min"],
        dataset_labels=dataset_labels(),
    script:
        "../scripts/ridge_selection.py"


rule learnability:
    input:
        spectra=unit_files(
            "results/{run}/spectra/{dataset}/{backbone}/{weights}/{kernel}/pool.npz"
        ),
    output:
        table=report(
            "results/{run}/tables/learnability.csv",
            caption="../report/table_learnability.rst",
            category="Summary tables",
            subcategory="E3 representations",
            labels=report_labels("per-mode learnability", kind="table"),
        ),
        modes="results/{run}/tables/learnability_modes.parquet",
        png=report(
            "results/{run}/figures/learnability.png",
            caption="../report/learnability.rst",
            category="Representations",
            subcategory="per-mode learnability",
            labels=report_labels("per-mode learnability", "png"),
        ),
        svg=report(
            "results/{run}/figures/learnability.svg",
            caption="../report/learnability.rst",
            category="Representations",
            subcategory="per-mode learnability",
            labels=report_labels("per-mode learnability", "svg"),
        ),
    log:
        "logs/{run}/learnability.log",
    benchmark:
        "benchmarks/{run}/learnability.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    params:
        units=kernel_units(),
        sample_sizes={d: sample_sizes(d) for d in config["datasets"]},
        spec=canonical(config["learnability"]),
        targets=clean_targets(),
        rcond=config["ridge"]["rcond"],
        dataset_labels=dataset_labels(),
    script:
        "../scripts/learnability.py"
