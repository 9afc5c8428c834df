# Evaluate: metrics from cached predictions under each named protocol, then tables.


rule evaluate:
    wildcard_constraints:
        dataset=_datasets_with(sharded=False),
    input:
        predictions="results/matches/{method}/{dataset}.h5",
        dataset=get_dataset_input,
        code=code("evaluation", "geometry", "datasets", "pipeline/match.py"),
    output:
        summary="results/metrics/{method}/{dataset}/{protocol}.json",
        pairs="results/metrics/{method}/{dataset}/{protocol}_pairs.csv",
    log:
        "logs/evaluate/{method}/{dataset}/{protocol}.log",
    benchmark:
        "results/runtime/evaluate/{method}/{dataset}/{protocol}.tsv"
    conda:
        "../envs/matchrepro.yaml"
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        spec=evaluate_spec,
    shell:
        "python -m matchrepro evaluate --spec {params.spec:q} --predictions {input.predictions}"
        " --out {output.summary} --pairs-out {output.pairs} > {log} 2>&1"


rule evaluate_shard:
    input:
        predictions="results/matches/{method}/{dataset}/shard_{shard}.h5",
        dataset=get_dataset_input,
        code=code("evaluation", "geometry", "datasets", "pipeline/match.py"),
    output:
        pairs="results/metrics/{method}/{dataset}/{protocol}/shard_{shard}_pairs.csv",
    log:
        "logs/evaluate/{method}/{dataset}/{protocol}/shard_{shard}.log",
    conda:
        "../envs/matchrepro.yaml"
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        spec=evaluate_spec,
    shell:
        "python -m matchrepro evaluate --spec {params.spec:q} --predictions {input.predictions}"
        " --shard {wildcards.shard} --pairs-out {output.pairs} > {log} 2>&1"


rule gather_evaluation:
    wildcard_constraints:
        dataset=_datasets_with(sharded=True),
    input:
        shards=lambda w: [
            f"results/metrics/{w.method}/{w.dataset}/{w.protocol}/shard_{s}_pairs.csv"
            for s in get_shards(w.dataset)
        ],
        dataset=get_dataset_input,
    output:
        summary="results/metrics/{method}/{dataset}/{protocol}.json",
        pairs="results/metrics/{method}/{dataset}/{protocol}_pairs.csv",
    log:
        "logs/evaluate/{method}/{dataset}/{protocol}.log",
    conda:
        "../envs/matchrepro.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        spec=evaluate_spec,
    shell:
        "python -m matchrepro gather-evaluation --spec {params.spec:q} --out {output.summary}"
        " --pairs-out {output.pairs} {input.shards} > {log} 2>&1"


rule tables:
    input:
        metrics=get_all_metrics,
        published=PUBLISHED,
        code=code("reporting"),
    output:
        report(
            directory("results/tables"),
            patterns=["{name}.html"],
            caption="../report/tables.rst",
            category="Tables",
        ),
    log:
        "logs/tables.log",
    conda:
        "../envs/matchrepro.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        spec=tables_spec,
    shell:
        "python -m matchrepro tables --spec {params.spec:q} --results {input.metrics}"
        " --published {input.published} --out {output} > {log} 2>&1"



# One benchmark's tables alone (results/benchmarks/<name>): the tables rule on that benchmark's
# metrics only, so its DAG holds only what those methods need (descriptor matchers train nothing).
use rule tables as benchmark_tables with:
    input:
        metrics=get_benchmark_metrics,
        published=PUBLISHED,
        code=code("reporting"),
    output:
        directory("results/benchmarks/{benchmark}"),
    log:
        "logs/benchmark_tables/{benchmark}.log",
    params:
        spec=lambda w: spec(benchmarks={w.benchmark: config["benchmarks"][w.benchmark]["dataset"]}),
