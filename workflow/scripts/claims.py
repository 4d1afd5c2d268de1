from rmtlens.io import load_table, save_table
from rmtlens.report import scaling_claims
from rmtlens.workflow import job_logger

log = job_logger(snakemake.log[0], "claims")
i = snakemake.input
claims = scaling_claims(load_table(i.power_laws), load_table(i.estimators), load_table(i.scaling),
                        load_table(i.by_regime), load_table(i.local_law), load_table(i.de_bias))
for _, row in claims.iterrows():
    log.info("%s · %s · %s · %s: %s", row["backbone"], row["weights"], row["kernel"], row["claim"], row["statement"])
save_table(snakemake.output.table, claims)
