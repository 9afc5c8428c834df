# Datasets: built (demo), downloaded (real), MegaDepth preprocessing, pretrained weights.


rule build_demo_dataset:
    input:
        code=code("demo", "datasets/pairs.py", "geometry"),
    output:
        directory("resources/demo/{dataset}"),
    log:
        "logs/build_demo_dataset/{dataset}.log",
    benchmark:
        "results/runtime/build_demo_dataset/{dataset}.tsv"
    conda:
        "../envs/matchrepro.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        spec=lambda w: spec(dataset=config["datasets"][w.dataset]),
    shell:
        "python -m matchrepro build-demo --spec {params.spec:q} --out {output} > {log} 2>&1"


# Downloads do not depend on the code: a code update must not re-extract hundreds of GB.
rule download_dataset:
    output:
        directory("resources/datasets/{dataset}"),
    log:
        "logs/download_dataset/{dataset}.log",
    conda:
        "../envs/matchrepro.yaml"
    resources:
        mem_mb=2000,
        runtime=24 * 60,
    params:
        spec=lambda w: spec(dataset=config["datasets"][w.dataset]),
        cache=lambda w: f"resources/downloads/{w.dataset}",
    shell:
        "python -m matchrepro download --spec {params.spec:q} --cache {params.cache} --out {output} > {log} 2>&1"


rule fetch_weights:
    output:
        "resources/weights/{weights}.pth",
    log:
        "logs/fetch_weights/{weights}.log",
    conda:
        "../envs/matchrepro.yaml"
    resources:
        mem_mb=1000,
        runtime=60,
    params:
        spec=lambda w: spec(weights=config["weights"][w.weights]),
    shell:
        "python -m matchrepro fetch-weights --spec {params.spec:q} --out {output} > {log} 2>&1"


rule preprocess_megadepth:
    input:
        unpack(preprocess_inputs),
    output:
        directory("resources/preprocessed/{prep}"),
    log:
        "logs/preprocess_megadepth/{prep}.log",
    conda:
        "../envs/matchrepro.yaml"
    threads: 4
    resources:
        mem_mb=8000,
        runtime=12 * 60,
    params:
        spec=lambda w: spec(
            preprocessing=config["preprocessing"][w.prep],
            dataset=config["datasets"][config["preprocessing"][w.prep]["dataset"]],
        ),
    shell:
        "python -m matchrepro preprocess --spec {params.spec:q} --out {output} > {log} 2>&1"
