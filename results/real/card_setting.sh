#!/usr/bin/env bash
# The SmolLM2-135M-Instruct model card's own setting where the packaged data allows it: HellaSwag 0-shot acc_norm
# (card: 40.9, lighteval, bf16) and ARC-Challenge test 0-shot (card's 37.3 is the mean of ARC-Easy and ARC-Challenge;
# ARC-Easy's test split ships in no package, so ours is ARC-Challenge alone, not comparable), through lm-eval's own
# CLI and its own task files with only the data location changed, on the packaged real test sets.
# Usage: bash results/real/card_setting.sh OUTPUT_DIR [MODEL_DIR]   (MODEL_DIR: default the embedded model)
set -euo pipefail
out=${1:?output folder}
model=${2:-$(sapo model materialize)}
data=$(python -c "from sapo.evaluate.packaged import prepare; print(prepare('openllm') / 'lm_eval')")
tasks=$(python -c "import lm_eval.tasks, pathlib; print(pathlib.Path(lm_eval.tasks.__file__).parent)")
mkdir -p "$out/tasks"
cp "$tasks"/hellaswag/utils.py "$out/tasks/"
sed -e "s|^task: hellaswag$|task: card_hellaswag|" \
    -e "s|^dataset_path: Rowan/hellaswag$|dataset_path: json\ndataset_kwargs:\n  data_files:\n    train: $data/hellaswag/train.jsonl\n    validation: $data/hellaswag/validation.jsonl|" \
    -e "/^  - multiple_choice$/d" -e "/^tag:$/d" "$tasks/hellaswag/hellaswag.yaml" > "$out/tasks/card_hellaswag.yaml"
sed -e "s|^task: arc_easy$|task: card_arc_challenge|" \
    -e "s|^dataset_path: allenai/ai2_arc$|dataset_path: json\ndataset_kwargs:\n  data_files:\n    train: $data/arc_challenge/train.jsonl\n    test: $data/arc_challenge/test.jsonl|" \
    -e "/^dataset_name: ARC-Easy$/d" -e "/^validation_split: validation$/d" -e "/^  - ai2_arc$/d" -e "/^tag:$/d" \
    "$tasks/arc/arc_easy.yaml" > "$out/tasks/card_arc_challenge.yaml"
HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python -m lm_eval --model hf \
  --model_args "pretrained=$model,dtype=float32" --include_path "$out/tasks" \
  --tasks card_hellaswag,card_arc_challenge --num_fewshot 0 --batch_size 32 --device cpu --seed 0 \
  --output_path "$out" ${LIMIT:+--limit "$LIMIT"}
