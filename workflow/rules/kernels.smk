rule kernel:
    input:
        embeddings="results/{run}/embeddings/{dataset}/{backbone}/{weights}.npy",
    output:
        kernel="results/{run}/kernels/{dataset}/{backbone}/{weights}/features.npy",
    log:
        "logs/{run}/kernel/{dataset}/{backbone}/{weights}/features.log",
    benchmark:
        "benchmarks/{run}/kernel/{dataset}/{backbone}/{weights}/features.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    resources:
        mem_mb=lambda wc: 2000
        + 24
        * n_pool(wc)
        * (n_pool(wc) + config["datasets"][wc.dataset]["n_test"])
        // 10**6,
        runtime=lambda wc, attempt: minutes_for(n_pool(wc), 20, 2, attempt),
    params:
        n_pool=n_pool,
    script:
        "../scripts/feature_kernel.py"


rule entk_tile:
    input:
        unpack(weights_inputs),
        dataset="results/{run}/datasets/{dataset}.npz",
    output:
        "results/{run}/kernels/{dataset}/{backbone}/{weights}/entk_tiles/r{row}_c{col}.npy",
    log:
        "logs/{run}/entk_tile/{dataset}/{backbone}/{weights}/r{row}_c{col}.log",
    benchmark:
        "benchmarks/{run}/entk_tile/{dataset}/{backbone}/{weights}/r{row}_c{col}.tsv"
    # next after pretraining among the jobs ready together: the eNTK's chain (assembly,
    # eigendecompositions, ridge paths) then overlaps the feature kernels' shorter jobs
    priority: 5
    conda:
        "../../envs/rmtlens.yaml"
    threads: entk_tile_threads
    resources:
        mem_mb=lambda wc, attempt: int(
            1024 * config["entk"]["memory_gb"] * (1 + 0.5 * (attempt - 1))
        )
        + 2000,
        runtime=lambda wc, attempt: 120 * attempt,
        gpu=1,
    params:
        model=lambda wc: backbone_spec(wc)["model"],
        image_size=lambda wc: backbone_spec(wc)["image_size"],
        seed=lambda wc: backbone_spec(wc)["seed"],
        head_seed=lambda wc: backbone_spec(wc)["head_seed"],
        model_kwargs=lambda wc: canonical(backbone_spec(wc)["model_kwargs"]),
        tile=lambda wc: entk_tile(wc),
        entk=entk_spec,
        hub_cache="resources/hub",
    script:
        "../scripts/entk_tile.py"


rule entk_accuracy:
    input:
        unpack(weights_inputs),
        dataset="results/{run}/datasets/{dataset}.npz",
    output:
        "results/{run}/kernels/{dataset}/{backbone}/{weights}/entk.accuracy.json",
    log:
        "logs/{run}/entk_accuracy/{dataset}/{backbone}/{weights}.log",
    benchmark:
        "benchmarks/{run}/entk_accuracy/{dataset}/{backbone}/{weights}.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    threads: 2
    resources:
        mem_mb=lambda wc, attempt: int(
            1024 * config["entk"]["memory_gb"] * (1 + 0.5 * (attempt - 1))
        )
        + 2000,
        runtime=lambda wc, attempt: 60 * attempt,
        gpu=1,
    params:
        model=lambda wc: backbone_spec(wc)["model"],
        image_size=lambda wc: backbone_spec(wc)["image_size"],
        seed=lambda wc: backbone_spec(wc)["seed"],
        head_seed=lambda wc: backbone_spec(wc)["head_seed"],
        model_kwargs=lambda wc: canonical(backbone_spec(wc)["model_kwargs"]),
        probe_size=lambda wc: min(config["accuracy"]["probe_size"], n_pool(wc)),
        entk=entk_spec,
        hub_cache="resources/hub",
    script:
        "../scripts/entk_accuracy.py"


rule entk_assemble:
    input:
        tiles=entk_tile_files,
    output:
        "results/{run}/kernels/{dataset}/{backbone}/{weights}/entk.npy",
    log:
        "logs/{run}/entk_assemble/{dataset}/{backbone}/{weights}.log",
    benchmark:
        "benchmarks/{run}/entk_assemble/{dataset}/{backbone}/{weights}.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    resources:
        mem_mb=2000,
        runtime=lambda wc, attempt: minutes_for(n_pool(wc), 30, 2, attempt),
    params:
        n_pool=n_pool,
        n_test=lambda wc: config["datasets"][wc.dataset]["n_test"],
        tile_size=config["entk"]["tile_size"],
    script:
        "../scripts/entk_assemble.py"
