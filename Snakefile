# matchrepro: Patch2Pix and IMP/EIMP reproduced end to end.
#   snakemake --cores all results/tables                 demo (offline, CPU, minutes)
#   snakemake --configfile configs/paper.yaml --profile profiles/slurm     full scale
# The Snakefile is a table of contents: logic lives in rules/common.smk, steps in rules/*.smk.


from snakemake.utils import min_version


min_version("9.0")


# config.yaml (the demo) is the default; a --configfile replaces it instead of being merged
# into it, so no demo key leaks into a full-scale run.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/match.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        get_final_output,
