rule embed:
    input:
        unpack(weights_inputs),
        dataset="results/{run}/datasets/{dataset}.npz",
    output:
        "results/{run}/embeddings/{dataset}/{backbone}/{weights}.npy",
    log:
        "logs/{run}/embed/{dataset}/{backbone}/{weights}.log",
    benchmark:
        "benchmarks/{run}/embed/{dataset}/{backbone}/{weights}.tsv"
    wildcard_constraints:
        weights="init|pretrained|trained",  # weights `file`: representation_file (arrays.smk)
    conda:
        "../../envs/rmtlens.yaml"
    threads: embed_threads
    resources:
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=lambda wc, attempt: 60 * attempt,
        gpu=1,
    params:
        model=lambda wc: backbone_spec(wc)["model"],
        image_size=lambda wc: backbone_spec(wc)["image_size"],
        seed=lambda wc: backbone_spec(wc)["seed"],
        model_kwargs=lambda wc: canonical(backbone_spec(wc)["model_kwargs"]),
        batch_size=config["embed"]["batch_size"],
        hub_cache="resources/hub",
    script:
        "../scripts/embed.py"
