# rmtlens: random-matrix-theory lens on the generalisation of neural representations.
# Table of contents only: configuration, one include per stage, the default target.
from snakemake.utils import min_version

min_version("9.0")


# The default analysis, unless presets are given with --configfile (they replace it:
# merging would add the default's datasets and backbones to every preset).
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/arrays.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/kernels.smk"
include: "workflow/rules/spectra.smk"
include: "workflow/rules/lowrank.smk"
include: "workflow/rules/ridge.smk"
include: "workflow/rules/theory.smk"
include: "workflow/rules/extensions.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/noise.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
