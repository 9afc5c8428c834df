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
        mem_mb=4000,
        runtime=120,
    params:
        spec=extract_spec,
    shell:
        "python -m matchrepro extract --spec {params.spec:q} --out {output} > {log} 2>&1"


rule match_pairs:
    input:
        unpack(get_match_inputs),
        code=code("matchers", "pipeline/match.py", "datasets"),
    output:
        "results/matches/{method}/{dataset}.h5",
    log:
        "logs/match_pairs/{method}/{dataset}.log",
    benchmark:
        "results/runtime/match_pairs/{method}/{dataset}.tsv"
    conda:
        "../envs/matchrepro.yaml"
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        spec=match_spec,
        features=features_arg,
    shell:
        "python -m matchrepro match --spec {params.spec:q} {params.features} --out {output} > {log} 2>&1"
