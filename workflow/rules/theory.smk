rule theory:
    input:
        spectrum="results/spectra/{dataset}/{backbone}/{weights}/{kernel}/pool.npz",
    output:
        predictions="results/theory/{dataset}/{backbone}/{weights}/{kernel}/predictions.parquet",
        fit="results/theory/{dataset}/{backbone}/{weights}/{kernel}/powerlaw.csv",
        curves="results/theory/{dataset}/{backbone}/{weights}/{kernel}/powerlaw_curves.parquet",
    log:
        "logs/theory/{dataset}/{backbone}/{weights}/{kernel}.log",
    benchmark:
        "benchmarks/theory/{dataset}/{backbone}/{weights}/{kernel}.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        sample_sizes=lambda wc: sample_sizes(wc.dataset),
        lambdas_rel=relative_ridges(),
        targets=clean_targets(),
        powerlaw=canonical(config["theory"]),
        n_range=lambda wc: scaling_n_range(wc.dataset),
    script:
        "../scripts/theory.py"


rule power_laws:
    input:
        fits=unit_files(
            "results/theory/{dataset}/{backbone}/{weights}/{kernel}/powerlaw.csv"
        ),
        curves=unit_files(
            "results/theory/{dataset}/{backbone}/{weights}/{kernel}/powerlaw_curves.parquet"
        ),
    output:
        table=report(
            "results/tables/power_laws.csv",
            caption="../report/table_power_laws.rst",
            category="Summary tables",
            subcategory="E4 scaling",
            labels=report_labels("power-law fits", kind="table"),
        ),
        png=report(
            "results/figures/power_laws.png",
            caption="../report/power_laws.rst",
            category="Scaling laws",
            labels=report_labels("power-law fits", "png"),
        ),
        svg=report(
            "results/figures/power_laws.svg",
            caption="../report/power_laws.rst",
            category="Scaling laws",
            labels=report_labels("power-law fits", "svg"),
        ),
    log:
        "logs/power_laws.log",
    benchmark:
        "benchmarks/power_laws.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    params:
        dataset_labels=dataset_labels(),
    script:
        "../scripts/power_laws.py"


rule estimators:
    input:
        table="results/tables/ridge.parquet",
        predictions=unit_files(
            "results/theory/{dataset}/{backbone}/{weights}/{kernel}/predictions.parquet"
        ),
        fits="results/tables/power_laws.csv",
    output:
        joined="results/tables/theory.parquet",
        de_bias=report(
            "results/tables/de_bias.csv",
            caption="../report/table_de_bias.rst",
            category="Summary tables",
            subcategory="E2 estimators",
            labels=report_labels("DE bias by n/N_pool", kind="table"),
        ),
        estimators=report(
            "results/tables/estimators.csv",
            caption="../report/table_estimators.rst",
            category="Summary tables",
            subcategory="E2 estimators",
            labels=report_labels("estimator accuracy", kind="table"),
        ),
        by_regime=report(
            "results/tables/estimators_by_regime.csv",
            caption="../report/table_estimators_by_regime.rst",
            category="Summary tables",
            subcategory="E2 estimators",
            labels=report_labels("errors by ridge and n/N_pool", kind="table"),
        ),
        png=report(
            "results/figures/estimators.png",
            caption="../report/estimators.rst",
            category="Estimators",
            labels=report_labels("estimators versus risk", "png"),
        ),
        svg=report(
            "results/figures/estimators.svg",
            caption="../report/estimators.rst",
            category="Estimators",
            labels=report_labels("estimators versus risk", "svg"),
        ),
    log:
        "logs/estimators.log",
    benchmark:
        "benchmarks/estimators.tsv"
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
            "results/spectra/{dataset}/{backbone}/{weights}/{kernel}/pool.npz"
        ),
        fits="results/tables/power_laws.csv",
        best="results/tables/best_risk.csv",
    output:
        table=report(
            "results/tables/representations.csv",
            caption="../report/table_representations.rst",
            category="Summary tables",
            subcategory="E3 representations",
            labels=report_labels("representations", kind="table"),
        ),
        png=report(
            "results/figures/representations.png",
            caption="../report/representations.rst",
            category="Representations",
            subcategory="spectra and alignment",
            labels=report_labels("spectra and alignment", "png"),
        ),
        svg=report(
            "results/figures/representations.svg",
            caption="../report/representations.rst",
            category="Representations",
            subcategory="spectra and alignment",
            labels=report_labels("spectra and alignment", "svg"),
        ),
    log:
        "logs/representations.log",
    benchmark:
        "benchmarks/representations.tsv"
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
        joined="results/tables/theory.parquet",
        fits="results/tables/power_laws.csv",
        predictions=unit_files(
            "results/theory/{dataset}/{backbone}/{weights}/{kernel}/predictions.parquet"
        ),
    output:
        table=report(
            "results/tables/scaling.csv",
            caption="../report/table_scaling.rst",
            category="Summary tables",
            subcategory="E4 scaling",
            labels=report_labels("scaling exponents", kind="table"),
        ),
        png=report(
            "results/figures/scaling.png",
            caption="../report/scaling.rst",
            category="Scaling laws",
            labels=report_labels("scaling laws", "png"),
        ),
        svg=report(
            "results/figures/scaling.svg",
            caption="../report/scaling.rst",
            category="Scaling laws",
            labels=report_labels("scaling laws", "svg"),
        ),
    log:
        "logs/scaling.log",
    benchmark:
        "benchmarks/scaling.tsv"
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
        joined="results/tables/theory.parquet",
    output:
        table="results/tables/local_law.csv",
        beside="results/tables/gcv_local_law.csv",
        summary=report(
            "results/tables/gcv_local_law_summary.csv",
            caption="../report/table_gcv_local_law.rst",
            category="Summary tables",
            subcategory="E5 local law",
            labels=report_labels("GCV and the local law", kind="table"),
        ),
        beside_png=report(
            "results/figures/gcv_local_law.png",
            caption="../report/gcv_local_law.rst",
            category="Local law",
            labels=report_labels("GCV error against local-law deviation", "png"),
        ),
        beside_svg=report(
            "results/figures/gcv_local_law.svg",
            caption="../report/gcv_local_law.rst",
            category="Local law",
            labels=report_labels("GCV error against local-law deviation", "svg"),
        ),
        png=report(
            "results/figures/local_law.png",
            caption="../report/local_law.rst",
            category="Local law",
            labels=report_labels("local-law deviations", "png"),
        ),
        svg=report(
            "results/figures/local_law.svg",
            caption="../report/local_law.rst",
            category="Local law",
            labels=report_labels("local-law deviations", "svg"),
        ),
    log:
        "logs/local_law.log",
    benchmark:
        "benchmarks/local_law.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    params:
        n_min=config["analysis"]["n_min"],
    script:
        "../scripts/local_law.py"


rule claims:
    input:
        power_laws="results/tables/power_laws.csv",
        estimators="results/tables/estimators.csv",
        scaling="results/tables/scaling.csv",
        by_regime="results/tables/estimators_by_regime.csv",
        local_law="results/tables/gcv_local_law_summary.csv",
        de_bias="results/tables/de_bias.csv",
    output:
        table=report(
            "results/tables/claims.csv",
            caption="../report/table_claims.rst",
            category="Summary tables",
            subcategory="Claims",
            labels=report_labels("claims", kind="table"),
        ),
    log:
        "logs/claims.log",
    benchmark:
        "benchmarks/claims.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    script:
        "../scripts/claims.py"
