rule figures:
    input:
        table="results/{run}/tables/ridge.parquet",
    output:
        risk_vs_n_png=report(
            "results/{run}/figures/risk_vs_n.png",
            caption="../report/risk_vs_n.rst",
            category="Ridge paths",
            labels=report_labels("risk versus n", "png"),
        ),
        risk_vs_n_svg=report(
            "results/{run}/figures/risk_vs_n.svg",
            caption="../report/risk_vs_n.rst",
            category="Ridge paths",
            labels=report_labels("risk versus n", "svg"),
        ),
        gcv_vs_risk_png=report(
            "results/{run}/figures/gcv_vs_risk.png",
            caption="../report/gcv_vs_risk.rst",
            category="Ridge paths",
            labels=report_labels("GCV versus risk", "png"),
        ),
        gcv_vs_risk_svg=report(
            "results/{run}/figures/gcv_vs_risk.svg",
            caption="../report/gcv_vs_risk.rst",
            category="Ridge paths",
            labels=report_labels("GCV versus risk", "svg"),
        ),
        risk_vs_lambda_png=report(
            "results/{run}/figures/risk_vs_lambda.png",
            caption="../report/risk_vs_lambda.rst",
            category="Ridge paths",
            labels=report_labels("risk versus ridge", "png"),
        ),
        risk_vs_lambda_svg=report(
            "results/{run}/figures/risk_vs_lambda.svg",
            caption="../report/risk_vs_lambda.rst",
            category="Ridge paths",
            labels=report_labels("risk versus ridge", "svg"),
        ),
    log:
        "logs/{run}/figures.log",
    benchmark:
        "benchmarks/{run}/figures.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    params:
        lambdas_rel=config["figures"]["lambdas_rel"],
        dataset_labels=dataset_labels(),
    script:
        "../scripts/figures.py"
