# What people read: tables (in evaluate.smk), figures per benchmark, provenance; all marked
# for `snakemake --report`.


rule figures:
    input:
        metrics=get_benchmark_metrics,
        predictions=get_benchmark_predictions,
        dataset=get_benchmark_dataset_input,
        code=code("reporting"),
    output:
        report(
            directory("results/figures/{benchmark}"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
            subcategory="{benchmark}",
        ),
    log:
        "logs/figures/{benchmark}.log",
    conda:
        "../envs/matchrepro.yaml"
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        spec=figures_spec,
    shell:
        "python -m matchrepro figures --spec {params.spec:q} --metrics {input.metrics}"
        " --predictions {input.predictions} --out {output} > {log} 2>&1"


rule training_curves:
    input:
        logs=lambda w: [f"results/training/{t}/loss.csv" for t in trained_runs()],
        val=lambda w: [f"results/training/{t}/validation.csv" for t in trained_runs()],
        code=code("reporting/figures.py"),
    output:
        report(
            directory("results/figures/training"),
            patterns=["{name}.png"],
            caption="../report/training.rst",
            category="Figures",
            subcategory="training",
        ),
    log:
        "logs/figures/training.log",
    conda:
        "../envs/matchrepro.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "python -m matchrepro training-curves --logs {input.logs} --validation {input.val} --out {output} > {log} 2>&1"


rule provenance:
    input:
        code=code("reporting"),
    output:
        html=report(
            "results/provenance/provenance.html",
            caption="../report/provenance.rst",
            category="Provenance",
        ),
        json="results/provenance/provenance.json",
    log:
        "logs/provenance.log",
    conda:
        "../envs/matchrepro.yaml"
    resources:
        mem_mb=500,
        runtime=5,
    params:
        spec=lambda w: spec(config=config),
    shell:
        "python -m matchrepro provenance --spec {params.spec:q} --out {output.html} > {log} 2>&1"
