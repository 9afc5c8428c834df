# Export: features and matches are computed once and cached; evaluation reads the cache.


rule extract_features:
    input:
        unpack(get_feature_inputs),
        code=code("features", "pipeline/extract.py", "datasets"),
    output:
        "results/features/{features}/{dataset}.h5",
    log:
        "logs/extract_features/{features}/{dataset}.log",
    benchmark:
        "results/runtime/extract_features/{features}/{dataset}.tsv"
    conda:
        "../envs/matchrepro.yaml"
    resources:
        gpu=lambda w: 0 if config["features"][w.features]["type"] == "sift" else 1,
        mem_mb=4000,
        runtime=120,
    params:
        spec=extract_spec,
        args=weights_arg,
    shell:
        "python -m matchrepro extract --spec {params.spec:q} {params.args} --out {output} > {log} 2>&1"


rule match_pairs:
    wildcard_constraints:
        dataset=_datasets_with(sharded=False),
    input:
        unpack(get_match_inputs),
        code=code("matchers", "models", "pipeline/match.py", "pipeline/extract.py", "datasets"),
    output:
        "results/matches/{method}/{dataset}.h5",
    log:
        "logs/match_pairs/{method}/{dataset}.log",
    benchmark:
        "results/runtime/match_pairs/{method}/{dataset}.tsv"
    conda:
        "../envs/matchrepro.yaml"
    threads: method_threads
    resources:
        gpu=method_gpus,
        mem_mb=8000,
        runtime=240,
    params:
        spec=match_spec,
        args=match_args,
        torch_threads=method_threads,  # as configured, not lowered to --cores: the numbers stay the same
    shell:
        "python -m matchrepro match-dataset --spec {params.spec:q} {params.args} --threads {params.torch_threads} --out {output} > {log} 2>&1"


# Sharded datasets (`shards: n` > 1): matching runs per contiguous chunk of pairs, then merges.


rule match_pairs_shard:
    input:
        unpack(get_match_inputs),
        code=code("matchers", "models", "pipeline/match.py", "pipeline/extract.py", "datasets"),
    output:
        "results/matches/{method}/{dataset}/shard_{shard}.h5",
    log:
        "logs/match_pairs/{method}/{dataset}/shard_{shard}.log",
    benchmark:
        "results/runtime/match_pairs/{method}/{dataset}/shard_{shard}.tsv"
    conda:
        "../envs/matchrepro.yaml"
    threads: method_threads
    resources:
        gpu=method_gpus,
        mem_mb=8000,
        runtime=240,
    params:
        spec=match_spec,
        args=match_args,
        torch_threads=method_threads,  # as configured, not lowered to --cores: the numbers stay the same
    shell:
        "python -m matchrepro match-dataset --spec {params.spec:q} {params.args} --threads {params.torch_threads} --shard {wildcards.shard}"
        " --out {output} > {log} 2>&1"


rule gather_matches:
    wildcard_constraints:
        dataset=_datasets_with(sharded=True),
    input:
        lambda w: [f"results/matches/{w.method}/{w.dataset}/shard_{s}.h5" for s in get_shards(w.dataset)],
    output:
        "results/matches/{method}/{dataset}.h5",
    log:
        "logs/gather_matches/{method}/{dataset}.log",
    conda:
        "../envs/matchrepro.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "python -m matchrepro gather-matches --out {output} {input} > {log} 2>&1"
