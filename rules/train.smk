# Training of the learned matchers (Patch2Pix, NCNet, IMP, EIMP).


rule train_model:
    input:
        unpack(train_inputs),
        code=train_code,
    output:
        weights="results/training/{model}/model_best.pth",
        loss="results/training/{model}/loss.csv",
        val="results/training/{model}/validation.csv",
    log:
        "logs/train_model/{model}.log",
    benchmark:
        "results/runtime/train_model/{model}.tsv"
    conda:
        "../envs/matchrepro.yaml"
    threads: train_threads
    resources:
        gpu=lambda w: train_param(w, "gpus", 1),
        mem_mb=lambda w: train_param(w, "mem_mb", 32000),
        runtime=lambda w: train_param(w, "runtime", 48 * 60),
    params:
        spec=train_spec,
        args=train_args,
        torch_threads=train_threads,  # as configured, not lowered to --cores: the numbers stay the same
    shell:
        "python -m matchrepro train --spec {params.spec:q} --out {output.weights} --loss-out {output.loss}"
        " --val-out {output.val} --threads {params.torch_threads} {params.args} > {log} 2>&1"
