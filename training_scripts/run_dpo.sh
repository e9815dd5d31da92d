# Federated DPO with OpenFedLLM's flags and values (its training_scripts/run_dpo.sh), unchanged:
# a 7B Vicuna in 8 bit on Anthropic/hh-rlhf, 5 clients, 2 per round, 200 rounds of 10 steps.
# It needs the hub (or local copies): set LOCAL_DATA_DIR to a folder holding
# Anthropic/hh-rlhf/<subset>/train.jsonl.gz to read the data offline. Extra flags pass through, e.g.
#   bash training_scripts/run_dpo.sh --ref_adapter output/<sft run>/checkpoint-200
#   bash training_scripts/run_dpo.sh --dataset_name HuggingFaceH4/ultrafeedback_binarized   # train_sft, as OpenFedLLM
#   bash training_scripts/run_dpo.sh --dataset_name HuggingFaceH4/ultrafeedback_binarized --dataset_split train_prefs
# --seq_length bounds prompt + answer (OpenFedLLM never passed it on; its DPO used 512 anyway).
openfedllm_dpo=(
    --model_name_or_path ehartford/Wizard-Vicuna-7B-Uncensored
    --dataset_name Anthropic/hh-rlhf
    --dataset_sample 20000
    --fed_alg fedavg
    --num_clients 5
    --sample_clients 2
    --learning_rate 5e-4
    --max_steps 10
    --num_rounds 200
    --batch_size 16
    --gradient_accumulation_steps 1
    --seq_length 512
    --use_peft
    --load_in_8bit
    --output_dir ./output
    --template vicuna_v1.1
)
if [ -n "${LOCAL_DATA_DIR:-}" ]; then openfedllm_dpo+=(--local_data_dir "$LOCAL_DATA_DIR"); fi

CUDA_VISIBLE_DEVICES=${GPU:-0} python main_dpo.py "${openfedllm_dpo[@]}" "$@"
