# Datasets: built (demo), downloaded (real), MegaDepth preprocessing, pretrained weights.


checkpoint build_demo_dataset:
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
        spec=lambda w: spec(dataset=dataset_spec(w.dataset)),
    shell:
        "python -m matchrepro build-demo --spec {params.spec:q} --out {output} > {log} 2>&1"


# Downloads do not depend on the code: a code update must not re-extract hundreds of GB.
checkpoint download_dataset:
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
        spec=lambda w: spec(dataset=dataset_spec(w.dataset)),
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


# Pair selection per scene, no features: Patch2Pix's training pairs and IMP's online pair lists.
rule select_pairs_scene:
    input:
        unpack(preprocess_inputs),
        code=code("preprocessing", "datasets"),
    output:
        "resources/preprocessed/{prep}/{scene}.npz",
    log:
        "logs/preprocess/{prep}/{scene}.log",
    benchmark:
        "results/runtime/preprocess/{prep}/{scene}.tsv"
    wildcard_constraints:
        prep=_kind("patch2pix_pairs", "imp_pairs"),
    conda:
        "../envs/matchrepro.yaml"
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        spec=preprocess_spec,
    shell:
        "python -m matchrepro preprocess --spec {params.spec:q} --scene {wildcards.scene}"
        " --out {output} > {log} 2>&1"


rule imp_dump_scene:
    input:
        unpack(preprocess_inputs),
        code=code("preprocessing", "datasets", "features"),
    output:
        "resources/preprocessed/{prep}/{scene}.h5",
    log:
        "logs/preprocess/{prep}/{scene}.log",
    benchmark:
        "results/runtime/preprocess/{prep}/{scene}.tsv"
    wildcard_constraints:
        prep=_kind("imp_dump"),
    conda:
        "../envs/matchrepro.yaml"
    resources:
        gpu=lambda w: 1 if uses_gpu_features(w.prep) else 0,
        mem_mb=8000,
        runtime=240,
    params:
        spec=preprocess_spec,
        args=weights_arg,
    shell:
        "python -m matchrepro preprocess --spec {params.spec:q} --scene {wildcards.scene} {params.args}"
        " --out {output} > {log} 2>&1"


rule preprocess_index:
    input:
        preprocess_scene_outputs,
    output:
        "resources/preprocessed/{prep}/index.json",
    log:
        "logs/preprocess/{prep}/index.log",
    conda:
        "../envs/matchrepro.yaml"
    resources:
        mem_mb=500,
        runtime=5,
    params:
        spec=lambda w: spec(preprocessing=config["preprocessing"][w.prep]),
    shell:
        "python -m matchrepro preprocess-index --spec {params.spec:q} --out {output} {input} > {log} 2>&1"
