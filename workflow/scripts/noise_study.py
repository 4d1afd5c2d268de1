from rmtlens.io import save_table
from rmtlens.workflow import Progress, job_logger, noise_study_job

wc, p = snakemake.wildcards, snakemake.params
log = job_logger(snakemake.log[0], f"noise_study/{wc.backbone}/{wc.weights}/{wc.kernel}")
meta = dict(dataset=wc.dataset, backbone=wc.backbone, weights=wc.weights, kernel=wc.kernel)
table = noise_study_job(
    snakemake.input.dataset, getattr(snakemake.input, "kernel", None), snakemake.input.spectrum,
    list(snakemake.input.eigh), [tuple(s) for s in p.subsamples], p.targets, p.noise, p.lambdas_rel, p.accuracy["rcond"], meta,
    progress=Progress(log, len(p.subsamples), "subsamples"), embeddings_path=getattr(snakemake.input, "embeddings", None),
    accuracy_path=snakemake.input.accuracy, safety=p.accuracy["safety"], floor_tolerance=p.floor_tolerance,
)
log.info("%d of %d rows not resolved (SPEC §2), left out of every summary: %d below the kernel's accuracy floor, "
         "%d more whose excess risk, GCV or LOO move by %.2g or more at half or twice the floor",
         int((~table["resolved"]).sum()), len(table), int((~table["resolved_floor"]).sum()),
         int((table["resolved_floor"] & ~table["resolved"]).sum()), p.floor_tolerance)
log.info("%d rows over %d subsamples; noise levels %s", len(table), len(p.subsamples),
         sorted({(k, v) for k, v in zip(table["noise"], table["level"])}))
save_table(snakemake.output[0], table)
