# Training of the learned matchers (Patch2Pix, NCNet, IMP, EIMP).


rule train_model:
    input:
        unpack(train_inputs),
    output:
        "results/training/{model}/model_best.pth",
    log:
        "logs/train_model/{model}.log",
    benchmark:
        "results/runtime/train_model/{model}.tsv"
    conda:
        "../envs/matchrepro.yaml"
    threads: 4
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=48 * 60,
    params:
        spec=lambda w: spec(training=config["training"][w.model]),
    shell:
        "python -m matchrepro train --spec {params.spec:q} --out {output} {input} > {log} 2>&1"
