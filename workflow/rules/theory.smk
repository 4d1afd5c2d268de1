rule theory:
    input:
        spectrum="results/{run}/spectra/{dataset}/{backbone}/{weights}/{kernel}/pool.npz",
    output:
        predictions="results/{run}/theory/{dataset}/{backbone}/{weights}/{kernel}/predictions.parquet",
        fit="results/{run}/theory/{dataset}/{backbone}/{weights}/{kernel}/powerlaw.csv",
    log:
        "logs/{run}/theory/{dataset}/{backbone}/{weights}/{kernel}.log",
    benchmark:
        "benchmarks/{run}/theory/{dataset}/{backbone}/{weights}/{kernel}.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        sample_sizes=lambda wc: sample_sizes(wc.dataset),
        lambdas_rel=relative_ridges(),
        targets=clean_targets(),
        window=canonical(config["theory"]["powerlaw_window"]),
    script:
        "../scripts/theory.py"


rule estimators:
    input:
        table="results/{run}/tables/ridge.parquet",
        predictions=unit_files(
            "results/{run}/theory/{dataset}/{backbone}/{weights}/{kernel}/predictions.parquet"
        ),
    output:
        joined="results/{run}/tables/theory.parquet",
        de_bias=report(
            "results/{run}/tables/de_bias.csv",
            caption="../report/table_de_bias.rst",
            category="Summary tables",
            subcategory="E2 estimators",
            labels=report_labels("DE bias by n/N_pool", kind="table"),
        ),
        estimators=report(
            "results/{run}/tables/estimators.csv",
            caption="../report/table_estimators.rst",
            category="Summary tables",
            subcategory="E2 estimators",
            labels=report_labels("estimator accuracy", kind="table"),
        ),
        png=report(
            "results/{run}/figures/estimators.png",
            caption="../report/estimators.rst",
            category="Estimators",
            labels=report_labels("estimators versus risk", "png"),
        ),
        svg=report(
            "results/{run}/figures/estimators.svg",
            caption="../report/estimators.rst",
            category="Estimators",
            labels=report_labels("estimators versus risk", "svg"),
        ),
    log:
        "logs/{run}/estimators.log",
    benchmark:
        "benchmarks/{run}/estimators.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    params:
        n_min=config["analysis"]["n_min"],
        n_pool={d: ds["n_pool"] for d, ds in config["datasets"].items()},
        bootstrap=canonical(config["analysis"]["bootstrap"]),
    script:
        "../scripts/estimators.py"


rule representations:
    input:
        spectra=unit_files(
            "results/{run}/spectra/{dataset}/{backbone}/{weights}/{kernel}/pool.npz"
        ),
        fits=unit_files(
            "results/{run}/theory/{dataset}/{backbone}/{weights}/{kernel}/powerlaw.csv"
        ),
        best="results/{run}/tables/best_risk.csv",
    output:
        table=report(
            "results/{run}/tables/representations.csv",
            caption="../report/table_representations.rst",
            category="Summary tables",
            subcategory="E3 representations",
            labels=report_labels("representations", kind="table"),
        ),
        png=report(
            "results/{run}/figures/representations.png",
            caption="../report/representations.rst",
            category="Representations",
            subcategory="spectra and alignment",
            labels=report_labels("spectra and alignment", "png"),
        ),
        svg=report(
            "results/{run}/figures/representations.svg",
            caption="../report/representations.rst",
            category="Representations",
            subcategory="spectra and alignment",
            labels=report_labels("spectra and alignment", "svg"),
        ),
    log:
        "logs/{run}/representations.log",
    benchmark:
        "benchmarks/{run}/representations.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    params:
        units=kernel_units(),
        targets=clean_targets(),
        alignment_ks=[10, 100],
        rcond=config["ridge"]["rcond"],
        dataset_labels=dataset_labels(),
    script:
        "../scripts/representations.py"


rule scaling:
    input:
        joined="results/{run}/tables/theory.parquet",
        fits=unit_files(
            "results/{run}/theory/{dataset}/{backbone}/{weights}/{kernel}/powerlaw.csv"
        ),
    output:
        table=report(
            "results/{run}/tables/scaling.csv",
            caption="../report/table_scaling.rst",
            category="Summary tables",
            subcategory="E4 scaling",
            labels=report_labels("scaling exponents", kind="table"),
        ),
        png=report(
            "results/{run}/figures/scaling.png",
            caption="../report/scaling.rst",
            category="Scaling laws",
            labels=report_labels("scaling laws", "png"),
        ),
        svg=report(
            "results/{run}/figures/scaling.svg",
            caption="../report/scaling.rst",
            category="Scaling laws",
            labels=report_labels("scaling laws", "svg"),
        ),
    log:
        "logs/{run}/scaling.log",
    benchmark:
        "benchmarks/{run}/scaling.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    params:
        lambdas_rel=config["scaling"]["lambdas_rel"],
        n_window=canonical(config["scaling"]["n_window"]),
        dataset_labels=dataset_labels(),
    script:
        "../scripts/scaling.py"


rule local_law:
    input:
        joined="results/{run}/tables/theory.parquet",
    output:
        table="results/{run}/tables/local_law.csv",
        png=report(
            "results/{run}/figures/local_law.png",
            caption="../report/local_law.rst",
            category="Local law",
            labels=report_labels("local-law deviations", "png"),
        ),
        svg=report(
            "results/{run}/figures/local_law.svg",
            caption="../report/local_law.rst",
            category="Local law",
            labels=report_labels("local-law deviations", "svg"),
        ),
    log:
        "logs/{run}/local_law.log",
    benchmark:
        "benchmarks/{run}/local_law.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    script:
        "../scripts/local_law.py"
