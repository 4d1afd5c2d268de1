# Extensions from [LM25] and [OJ21] (SPEC §7): double descent, learning dynamics.


rule double_descent:
    input:
        unpack(double_descent_embeddings),
        dataset=lambda wc: f"{RESULTS}/datasets/{config['double_descent']['dataset']}.npz",
    output:
        table="results/{run}/tables/double_descent.csv",
        summary=report(
            "results/{run}/tables/double_descent_summary.csv",
            caption="../report/table_double_descent.rst",
            category="Summary tables",
            subcategory="E6 double descent",
            labels=report_labels(
                "double descent", kind="table", study="double_descent"
            ),
        ),
        png=report(
            "results/{run}/figures/double_descent.png",
            caption="../report/double_descent.rst",
            category="Extensions",
            subcategory="E6 double descent",
            labels=report_labels("double descent", "png", study="double_descent"),
        ),
        svg=report(
            "results/{run}/figures/double_descent.svg",
            caption="../report/double_descent.rst",
            category="Extensions",
            subcategory="E6 double descent",
            labels=report_labels("double descent", "svg", study="double_descent"),
        ),
    log:
        "logs/{run}/double_descent.log",
    benchmark:
        "benchmarks/{run}/double_descent.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    # one thread: on CPU its numbers are the same with two (measured bit for bit), and a
    # second core serves another job better than this job's small products
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        spec=canonical(config["double_descent"]),
        targets=clean_targets(),
        accuracy=accuracy_params(),
    script:
        "../scripts/double_descent.py"


rule learning_dynamics:
    input:
        unpack(kernel_source),
        eigh=lambda wc: f"{RESULTS}/eigh/{wc.dataset}/{wc.backbone}/{wc.weights}/{wc.kernel}/n{sample_sizes(wc.dataset)[-1]}_s{config['seeds'][0]}.npz",
        dataset="results/{run}/datasets/{dataset}.npz",
        accuracy=kernel_accuracy,
    output:
        "results/{run}/dynamics/{dataset}/{backbone}/{weights}/{kernel}.parquet",
    log:
        "logs/{run}/learning_dynamics/{dataset}/{backbone}/{weights}/{kernel}.log",
    benchmark:
        "benchmarks/{run}/learning_dynamics/{dataset}/{backbone}/{weights}/{kernel}.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    resources:
        mem_mb=lambda wc: spectral_mem_mb(wc, sample_sizes(wc.dataset)[-1]),
        runtime=lambda wc, attempt: minutes_for(
            sample_sizes(wc.dataset)[-1], 60, 2, attempt
        ),
    params:
        spec=canonical(config["learning_dynamics"]),
        ridge=canonical(config["ridge"]),
        accuracy=accuracy_params(),
        targets=clean_targets(),
    script:
        "../scripts/learning_dynamics.py"


rule learning_dynamics_summary:
    input:
        unit_files(
            "results/{run}/dynamics/{dataset}/{backbone}/{weights}/{kernel}.parquet"
        ),
    output:
        table="results/{run}/tables/learning_dynamics.csv",
        summary=report(
            "results/{run}/tables/learning_dynamics_summary.csv",
            caption="../report/table_learning_dynamics.rst",
            category="Summary tables",
            subcategory="E7 learning dynamics",
            labels=report_labels("learning dynamics", kind="table"),
        ),
        png=report(
            "results/{run}/figures/learning_dynamics.png",
            caption="../report/learning_dynamics.rst",
            category="Extensions",
            subcategory="E7 learning dynamics",
            labels=report_labels("learning dynamics", "png"),
        ),
        svg=report(
            "results/{run}/figures/learning_dynamics.svg",
            caption="../report/learning_dynamics.rst",
            category="Extensions",
            subcategory="E7 learning dynamics",
            labels=report_labels("learning dynamics", "svg"),
        ),
    log:
        "logs/{run}/learning_dynamics_summary.log",
    benchmark:
        "benchmarks/{run}/learning_dynamics_summary.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    params:
        dataset_labels=dataset_labels(),
    script:
        "../scripts/learning_dynamics_summary.py"


rule linearisation:
    input:
        dataset=lambda wc: f"{RESULTS}/datasets/{config['linearisation']['dataset']}.npz",
    output:
        accuracy=report(
            "results/{run}/tables/linearisation_accuracy.csv",
            caption="../report/table_linearisation.rst",
            category="Summary tables",
            subcategory="E8 linearisation",
            labels=report_labels(
                "networks versus linearisations", kind="table", study="linearisation"
            ),
        ),
        alignment="results/{run}/tables/linearisation_alignment.csv",
        claims="results/{run}/tables/linearisation_claims.csv",
        png=report(
            "results/{run}/figures/linearisation.png",
            caption="../report/linearisation.rst",
            category="Extensions",
            subcategory="E8 linearisation",
            labels=report_labels(
                "networks versus linearisations", "png", study="linearisation"
            ),
        ),
        svg=report(
            "results/{run}/figures/linearisation.svg",
            caption="../report/linearisation.rst",
            category="Extensions",
            subcategory="E8 linearisation",
            labels=report_labels(
                "networks versus linearisations", "svg", study="linearisation"
            ),
        ),
    log:
        "logs/{run}/linearisation.log",
    benchmark:
        "benchmarks/{run}/linearisation.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    # one thread: on CPU its numbers are the same with two (measured bit for bit), and a
    # second core serves another job better than this job's small products
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 6000 * attempt,
        runtime=120,
        gpu=1,
    params:
        spec=canonical(config["linearisation"]),
    script:
        "../scripts/linearisation.py"
