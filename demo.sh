#!/usr/bin/env bash
# make demo: every pipeline end to end on the miniworld, the way a user runs them from a shell.
# Expects the world at $WORLD (make demo builds it) and the venv's python at $PY.
# `bash demo.sh A` (or B, C, D, E, T) runs one pipeline's part alone. Every step records a fingerprint of
# its inputs and flags, so a second run skips what is done: rm -rf $OUT to redo everything.
# The figures the README quotes are written to $OUT/figures.md (with the world's corpus
# digest), as printed here.
set -euo pipefail
PARTS=${1:-ABCDET}
PY=${PY:-.venv/bin/python}
WORLD=${WORLD:-data/world}
OUT=${OUT:-data/demo}
export TQDM_DISABLE=${TQDM_DISABLE:-1} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$OUT"    # and each part its own folder, before the shell writes into it (tee, >)
q="--quiet"
SECONDS=0
FIG="$OUT/figures.md"

# facts of the world (steps, checkpoints, name) from its config and truth
read -r NAME T1 T2 T3 CKPTS REV_T2 < <($PY - "$WORLD" <<'EOF'
import sys
from anatomy.olmo_config import load_olmo_config
c = load_olmo_config(sys.argv[1] + "/config.yaml")
m, n = c.extra["member_steps"], c.extra["nonmember_steps"]
steps = sorted(c.checkpoints)[:4]   # the four targets: T1, 2T1, 3T1, T2
print(c.model_name, m[1], n[0], n[1], ",".join(map(str, steps)), c.checkpoints.get(n[0], n[0]))
EOF
)
DESCRIBE=$($PY -c "from anatomy.truth import World; print(World.open('$WORLD').describe())")
echo "== $DESCRIBE: members = steps [0, $T1), non-members = [$T2, $T3), targets = $CKPTS"
cat "$WORLD/evidence.json" >/dev/null 2>&1 && $PY -c "
from anatomy.world.evidence import format_evidence; import json
print(format_evidence(json.load(open('$WORLD/evidence.json'))))"
PART_FIG=""
fig() { printf '%s\n' "$@" >> "$PART_FIG"; }

if [[ $PARTS == *A* ]]; then
echo
echo "== A. OLMoMIA: sample (disjoint jobs) -> filter -> vecs -> clustering -> attacks"
PART_FIG="$OUT/figures_A.md.tmp"; : > "$PART_FIG"
L=64; N=${DEMO_POOL:-400}; M=${DEMO_SPLIT:-100}; K=${DEMO_CLUSTERS:-2}
for s in 0 400 800; do      # members: a loop of disjoint jobs, as users run them
  $PY sample.py --world "$WORLD" --step_start 0 --step_end "$T1" \
      --sample_start $s --sample_end $((s + 400)) --out_dir "$OUT" $q
done
for s in 0 400 800; do      # non-members
  $PY sample.py --world "$WORLD" --step_start "$T2" --step_end "$T3" \
      --sample_start $s --sample_end $((s + 400)) --out_dir "$OUT" $q
done
$PY filter.py --world "$WORLD" --member_step_start 0 --member_step_end "$T1" \
    --nonmember_step_start "$T2" --nonmember_step_end "$T3" --num_data "$N" --max_length $L \
    --data_dir "$OUT"
$PY generate_vecs.py --dataset_name "${NAME}_${L}_${N}" --data_dir "$OUT" $q
$PY clustering.py --model_name "$NAME" --max_length $L --num_data "$N" --num_sample "$M" \
    --num_cluster "$K" --min_inter_dist 0.6 --data_dir "$OUT" --world "$WORLD" $q \
    | tee "$OUT/splits.md"
$PY control_split.py --world "$WORLD" --data_dir "$OUT" $q
SPLITS="random mix1 mix2 easy medium hard"
PAPER=""
for s in $SPLITS; do PAPER="$PAPER ${NAME}_${L}_${M}_$s"; done
# every (split, checkpoint) pair from one process, each checkpoint loaded once; EM-MIA
# (every text a prefix: n^2 ReCaLL pairs) at the first target checkpoint
$PY run_mia.py --world "$WORLD" --dataset $PAPER "${NAME}_control" "${NAME}_planted" \
    --data_dir "$OUT" --step ${CKPTS//,/ } --methods loss zlib mink minkpp blind \
    --output_dir "$OUT/results" $q > /dev/null
$PY run_mia.py --world "$WORLD" --dataset $PAPER "${NAME}_control" --data_dir "$OUT" \
    --step "$T1" --methods loss zlib mink minkpp emmia blind --emmia_init minkpp_20,loss,zlib \
    --output_dir "$OUT/results_emmia" $q > /dev/null
$PY make_table.py --results_dir "$OUT/results" --datasets $PAPER "${NAME}_control" \
    "${NAME}_planted" --methods loss zlib mink_20 minkpp_20 blind --quiet | tee "$OUT/attacks.md"
$PY make_table.py --results_dir "$OUT/results_emmia" --datasets $PAPER "${NAME}_control" \
    --methods loss minkpp_20 emmia blind --quiet | tee "$OUT/attacks_emmia.md"
fig "## A. OLMoMIA (AUROC x100; splits of $M from a pool of $N, L=$L, $K clusters)" "" \
    "Split statistics (planted = planted passages in the split, by the truth file):" "" \
    "$(cat "$OUT/splits.md")" "" "With EM-MIA, at step $T1 (data/demo/attacks_emmia.md):" "" \
    "$(cat "$OUT/attacks_emmia.md")" "" "Every target checkpoint (data/demo/attacks.md):" "" \
    "$(cat "$OUT/attacks.md")" ""
mv "$PART_FIG" "$OUT/figures_A.md"
echo "(A finished at ${SECONDS}s)"
fi

if [[ $PARTS == *B* ]]; then
B0=$SECONDS
echo
echo "== B. Training-mixture estimation on the final checkpoint"
PART_FIG="$OUT/figures_B.md.tmp"; : > "$PART_FIG"
test -f "$WORLD/truth/mixture_spec.yaml" || $PY -c "
from anatomy.world.build import write_mixture_spec; write_mixture_spec('$WORLD')"
SETS=$($PY -c "import json; t=json.load(open('$WORLD/truth.json'))
print(','.join(f'{k}={v}' for k, v in t['pools']['set_names'].items()))")
# the matched pool (members in proportion to the training mixture) and the rates pool
$PY fetch_category_samples.py --world "$WORLD" --n_per_category 200 --min_chars 0 \
    --out_dir "$OUT/samples" $q
$PY fetch_category_samples.py --slimpajama_root "$WORLD/pools_rates" --set_map "$SETS" \
    --n_per_category 200 --min_chars 0 --out_dir "$OUT/samples_rates" $q > /dev/null
$PY run_labelshift.py --world "$WORLD" --local_samples_dir "$OUT/samples" --classifier tfidf \
    --num_prompts 500 --max_new_tokens 128 --output_dir "$OUT/mixture" --run_name labelshift \
    $q > /dev/null
for pool in samples samples_rates; do
  $PY run_minkpp_mix.py --world "$WORLD" --local_samples_dir "$OUT/$pool" --mink_ratio 0.1 \
      --max_tokens 128 --reference_nonmembers world --output_dir "$OUT/mixture" \
      --run_name "minkpp_$pool" $q > /dev/null
done
TRAIN="$WORLD/truth/mixture_spec.yaml"
$PY benchmark_evaluation.py --compare "$OUT"/mixture/labelshift/estimators/* \
    --ground_truth "$TRAIN" --output_dir "$OUT/benchmark_output/labelshift" --quiet \
    | tee "$OUT/labelshift.md"
$PY benchmark_evaluation.py --compare "$OUT"/mixture/minkpp_samples/variants/* \
    --ground_truth "$TRAIN" "$WORLD/truth/pools_members_spec.yaml" \
    --output_dir "$OUT/benchmark_output/minkpp_matched" --quiet | tee "$OUT/minkpp_matched.md"
$PY benchmark_evaluation.py --compare "$OUT"/mixture/minkpp_samples_rates/variants/* \
    --ground_truth "$TRAIN" "$WORLD/truth/pools_rates_members_spec.yaml" \
    --output_dir "$OUT/benchmark_output/minkpp_rates" --quiet | tee "$OUT/minkpp_rates.md"
# the third arm: the world's own tokenizer's merge list (Hayase et al. 2024), on 300 pool
# documents per category, scored against the tokenizer's training-text mixture and the
# training-token mixture
$PY fetch_category_samples.py --world "$WORLD" --n_per_category 300 --min_chars 0 \
    --out_dir "$OUT/samples_tokenizer" $q > /dev/null
$PY infer_tokenizer_mixture.py --world "$WORLD" --local_samples_dir "$OUT/samples_tokenizer" \
    --output_dir "$OUT/mixture" --run_name tokenizer $q | tee "$OUT/tokenizer_mixture.txt"
$PY benchmark_evaluation.py --compare "$OUT/mixture/tokenizer" \
    --ground_truth "$WORLD/truth/tokenizer_mixture_spec.yaml" "$TRAIN" \
    --output_dir "$OUT/benchmark_output/tokenizer" --quiet | tee "$OUT/tokenizer.md"
fig "## B. Mixture estimation (final checkpoint; accuracy = 1 - L1/2)" "" \
    "Label shift, every estimator, against the training mixture:" "" \
    "$(cat "$OUT/labelshift.md")" "" \
    "Min-K%++ on the matched pool (members in proportion to the training mixture):" "" \
    "$(cat "$OUT/minkpp_matched.md")" "" \
    "Min-K%++ on the rates pool (membership rates unrelated to the mixture):" "" \
    "$(cat "$OUT/minkpp_rates.md")" "" \
    "The tokenizer's merge list (LP), against the tokenizer's training text and the training tokens:" "" \
    "$(cat "$OUT/tokenizer.md")" ""
mv "$PART_FIG" "$OUT/figures_B.md"
echo "(B took $((SECONDS - B0))s)"
fi
if [[ $PARTS == *C* ]]; then
C0=$SECONDS
echo
echo "== C. Memorization taxonomy: samples -> scores, duplicates, filters -> combine -> taxonomy"
PART_FIG="$OUT/figures_C.md.tmp"; : > "$PART_FIG"
M="$OUT/memorization"
mkdir -p "$M"
# a random 3,000 of the trained sequences plus every sequence a memorization plant or a
# template starts (the published study adds its memorized set to a random sample)
$PY memorization_samples.py --world "$WORLD" --all_sequences --sample 3000 --add_planted \
    --output "$M/samples.npy" $q
S=(--world "$WORLD" --sequence_ids "$M/samples.npy" $q)
test -f "$M/pythia/document.idx" || $PY convert_to_pythia.py --world "$WORLD" \
    --out "$M/pythia/document" $q
$PY memorization_scores.py "${S[@]}" --step $T1 $T2 $T3 --output "$M/scores.parquet"
$PY filter_duplicates.py "${S[@]}" --output "$M/duplicates.parquet"
$PY filter_templating.py "${S[@]}" --output "$M/templating.parquet"
$PY token_frequencies.py "${S[@]}" --output "$M/frequencies.parquet"
$PY filter_semantic.py "${S[@]}" --output "$M/semantic.parquet"
$PY classify_code_vs_nl.py "${S[@]}" --output "$M/code_vs_nl.parquet"
# samples_ds_type.parquet: "representative" (the random draw) or "memories" (the added planted
# sequences: their memorized ones go to training only, as the published study's memories set)
$PY combine_filters.py --inputs "$M"/{samples_ds_type,scores,duplicates,templating,frequencies,semantic,code_vs_nl}.parquet \
    --output "$M/combined.parquet" $q
# the models at T2, right after the dense memorization window: the checkpoint with the most
# memorized samples (the world's evidence.json), where all three categories hold some
$PY train_taxonomy.py --combined "$M/combined.parquet" --output_dir "$M/taxonomy" \
    --checkpoint "$REV_T2" --world "$WORLD" $q | tee "$M/taxonomy.md"
fig "## C. Memorization taxonomy" "" "$(cat "$M/taxonomy.md")" ""
mv "$PART_FIG" "$OUT/figures_C.md"
echo "(C took $((SECONDS - C0))s)"
fi
if [[ $PARTS == *D* ]]; then
echo
echo "== D. Dataset selection: select_data (every method, two targets) -> eval_selection"
D0=$SECONDS
PART_FIG="$OUT/figures_D.md.tmp"; : > "$PART_FIG"
D="$OUT/selection"
mkdir -p "$D"
# the first 2,048 stored instances are the candidates; each selection is 512 of them, and
# random selections of 1x, 2x, 3x that many give the compute multipliers
P=(--world "$WORLD" --pool_rows 2048 --work_dir "$D/work" $q)
NSEL=512
for t in license mix; do
  $PY select_data.py "${P[@]}" --method dsdm --target $t --n $NSEL --out "$D/dsdm_$t.npy"
  $PY select_data.py "${P[@]}" --method dsir --target $t --n $NSEL --dsir_min_length 10 \
      --out "$D/dsir_$t.npy"
  $PY select_data.py "${P[@]}" --method classifier --target $t --n $NSEL \
      --out "$D/classifier_$t.npy"
done
$PY select_data.py "${P[@]}" --method semdedup --n $NSEL --out "$D/semdedup.npy"
$PY eval_selection.py --world "$WORLD" --pool_rows 2048 --target license mix \
    --selections "$D"/{dsdm,dsir,classifier}_{license,mix}.npy "$D/semdedup.npy" \
    --random_budgets 1 2 3 --seeds 0 1 2 --selection_seeds 0 1 2 --output_dir "$D/eval" $q \
    | tee "$D/eval.md"
fig "## D. Dataset selection (pool: the first 2,048 instances; n = $NSEL; one epoch each)" "" \
    "$(cat "$D/eval.md")" ""
mv "$PART_FIG" "$OUT/figures_D.md"
echo "(D took $((SECONDS - D0))s)"
fi
if [[ $PARTS == *E* ]]; then
echo
echo "== E. Contrastive data: pretokenize (both packings) -> make_pairs -> filter_pairs (k = 1, 2, 5, 10) -> mine_negatives"
E0=$SECONDS
PART_FIG="$OUT/figures_E.md.tmp"; : > "$PART_FIG"
E="$OUT/contrastive"
mkdir -p "$E"     # tee opens its file before pretokenize.py would make the folder
# MLM rows from the world's documents, bert-base-uncased (offline vocab), 2,048 tokens a row
for pack in batch across_batches; do
  $PY pretokenize.py --world "$WORLD" --tokenizer_name bert-base-uncased --seq_len 2048 \
      --num_workers 2 --pack $pack --hf_save_name "$E/pretokenized-$pack" $q \
      | tee "$E/pretokenize-$pack.txt"
done
# docstring -> source and heading -> section pairs from the world's own sources, 10%
# planted mismatches, 5% planted exact copies; one embedding pass (cached in $E/work)
$PY make_pairs.py --world "$WORLD" --out "$E/pairs.jsonl.gz" --n_pairs 2000 $q \
    | tee "$E/make_pairs.txt"
F=(--dataset "$E/pairs.jsonl.gz" --query_key query --document_key document \
   --label_key planted --work_dir "$E/work" $q)
for k in 1 2 5 10; do
  $PY filter_pairs.py "${F[@]}" --k $k --output_dir "$E/filtered-k$k"
done
$PY filter_pairs.py "${F[@]}" --k 1 --by_position --output_dir "$E/filtered-k1-by-position"
# hard negatives: the kept rows at k = 2 (sharing the filter's pass and search), and every row
# with mine_negatives.py (contrastors shards; 7 negatives, NV-Retriever's 5% relative margin)
$PY filter_pairs.py "${F[@]}" --k 2 --mine_negatives 7 --relative_margin 0.05 \
    --output_dir "$E/filtered-k2-negatives"
$PY mine_negatives.py --dataset "$E/pairs.jsonl.gz" --query_key query --document_key document \
    --k 7 --relative_margin 0.05 --work_dir "$E/work" --output_dir "$E/negatives" $q
TABLE=$($PY -c "
from anatomy.contrastive.report import filter_table
print(filter_table(['$E/filtered-k1', '$E/filtered-k2', '$E/filtered-k5', '$E/filtered-k10',
                    '$E/filtered-k1-by-position']))")
NEG1=$($PY -c "from anatomy.contrastive.report import negatives_line as n; print(n('$E/filtered-k2-negatives'))")
NEG2=$($PY -c "from anatomy.contrastive.report import negatives_line as n; print(n('$E/negatives'))")
echo "$TABLE"; echo "filter k=2 + miner: $NEG1"; echo "mine_negatives (all rows): $NEG2"
fig "## E. Contrastive data" "" "Pretokenization (bert-base-uncased, 2,048-token rows):" "" \
    "- $(head -1 "$E/pretokenize-batch.txt")" "- $(head -1 "$E/pretokenize-across_batches.txt")" \
    "- $(tail -1 "$E/pretokenize-batch.txt")" "" \
    "Consistency filter (MiniLM, one index of all rows; make_pairs.py:" \
    "$(cat "$E/make_pairs.txt")):" "" \
    "$TABLE" "" "Hard negatives:" "" "- filter k=2 + miner: $NEG1" \
    "- mine_negatives.py, every row: $NEG2" ""
mv "$PART_FIG" "$OUT/figures_E.md"
echo "(E took $((SECONDS - E0))s)"
fi
if [[ $PARTS == *T* ]]; then
echo
echo "== T. Tracing text to the training steps that taught it: build_trace_index -> trace (--score --html)"
T0=$SECONDS
PART_FIG="$OUT/figures_T.md.tmp"; : > "$PART_FIG"
TR="$OUT/trace"
mkdir -p "$TR"
# the index of the trained stream, in blocks of 300 steps (built as units of the execution
# layer: --world_size W runs them as W ranks)
TB=$SECONDS
$PY build_trace_index.py --world "$WORLD" --index "$TR/index" --block_steps 300 $q \
    | tee "$TR/build.txt"
echo "$((SECONDS - TB)) s with start-up" > "$TR/build_time.txt"
# the texts: the label-shift generations of part B when they exist (else 100 samples of the
# final checkpoint, seeded), a few planted passages of every kind and two unseen documents
$PY - "$WORLD" "$OUT" "$TR/texts.jsonl" <<'EOF2' | tee "$TR/texts.txt"
import sys
from pathlib import Path
from anatomy import io
from anatomy.lm import load_tokenizer
from anatomy.truth import World
world, out, dest = World.open(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
tok = load_tokenizer(str(world.root / "tokenizer"))
L = world.truth["seq_len"]
recs, longer, empty = [], 0, 0
gen = out / "mixture" / "labelshift" / "generations.jsonl"
if gen.is_file():
    for i, r in enumerate(io.read_jsonl(gen)):
        ids = tok(r["text"], add_special_tokens=False)["input_ids"]
        if not ids:
            empty += 1
            continue
        if len(ids) > L:
            longer += 1
            continue
        recs.append({"id": f"generation:{i}", "kind": "generation", "text": r["text"]})
    src = (f"{len(recs)} label-shift generations of part B (left out: {empty} empty, {longer} "
           f"re-encoded longer than the {L}-token context)")
else:
    from anatomy.lm import generate, load_causal_lm
    model = load_causal_lm(str(world.root / "model"))
    for i, ids in enumerate(generate(model, tok, 100, L - 8, seed=0, progress=False)):
        recs.append({"id": f"generation:{i}", "kind": "generation", "input_ids": ids})
    src = "100 samples of the final checkpoint (part B's generations are not there)"
n_planted = 0
for kind in ("mem_dense", "mem_spread", "mem_late", "mia", "mia_control", "templates",
             "recollect"):  # two of each kind that fit the context (--score needs it)
    for r in [r for r in world.truth["planted"][kind] if r["length"] <= L][:2]:
        recs.append({"id": f"{kind}:{r['doc']}", "kind": kind,
                     "input_ids": world.doc_tokens(r["doc"]).astype(int).tolist()})
        n_planted += 1
for i, r in enumerate(io.iter_jsonl(world.root / "truth" / "unseen.jsonl.gz")):
    if i == 2:
        break
    ids = tok(r["text"], add_special_tokens=False)["input_ids"][:L]
    recs.append({"id": f"unseen:{i}", "kind": "unseen", "input_ids": ids})
io.write_jsonl(dest, recs)
print(f"texts: {src}, {n_planted} planted passages, 2 unseen documents")
EOF2
$PY trace.py --world "$WORLD" --index "$TR/index" --texts "$TR/texts.jsonl" \
    --output "$TR/traced.jsonl" --html "$TR/trace.html" --score $q | tee "$TR/trace.txt"
SUMMARY=$($PY - "$TR/traced.jsonl" "$WORLD" <<'EOF2'
import sys
from anatomy import io
from anatomy.truth import World
recs = io.read_jsonl(sys.argv[1])
ck = [c["revision"] for c in World.open(sys.argv[2]).truth["checkpoints"]]
gen = [r for r in recs if r["kind"] == "generation"]
withs = [r for r in gen if r["spans"]]
longest = max((s["end"] - s["start"] for r in gen for s in r["spans"]), default=0)
print(f"Generations: {len(withs)} of {len(gen)} hold a span of >= 8 tokens that occurs in the "
      f"training data; the longest is {longest} tokens.")
print()
print("| text | tokens | longest span | count | exposures before " + ", ".join(ck) +
      " | loss at " + " / ".join(c.split('-')[0] for c in ck) + " |")
print("|---|---|---|---|---|---|")
for r in recs:
    if r["kind"] == "generation":
        continue
    s = max(r["spans"], key=lambda s: s["end"] - s["start"], default=None)
    if s is None:
        print(f"| {r['id']} | {r['n_tokens']} | none | 0 | - | - |")
        continue
    loss = " / ".join(f"{s['loss'][c]:.2f}" for c in ck)
    print(f"| {r['id']} | {r['n_tokens']} | {s['end'] - s['start']} | {s['count']} | "
          + " / ".join(str(s['exposures'][c]) for c in ck) + f" | {loss} |")
EOF2
)
echo "$SUMMARY"
fig "## T. Tracing (build_trace_index.py, trace.py --score)" "" \
    "- index: $(cat "$TR/build.txt") ($(cat "$TR/build_time.txt"))" \
    "- $(cat "$TR/texts.txt")" "- $(cat "$TR/trace.txt")" "" "$SUMMARY" "" \
    "Page: $TR/trace.html" ""
mv "$PART_FIG" "$OUT/figures_T.md"
echo "(T took $((SECONDS - T0))s)"
fi
{ printf '# make demo figures\n\nWorld: %s\n\n' "$DESCRIBE"
  for p in A B C D E T; do if [ -f "$OUT/figures_$p.md" ]; then cat "$OUT/figures_$p.md"; fi; done; } \
    > "$FIG.tmp"
mv "$FIG.tmp" "$FIG"
echo "(demo finished in ${SECONDS}s; figures in $FIG)"
