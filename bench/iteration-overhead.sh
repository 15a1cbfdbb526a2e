#!/usr/bin/env bash
# Figure 1, per-iteration overhead: ralph's time per iteration next to a bare shell loop doing
# the same work (spawn the agent with stdin from /dev/null, run the check, `git add -A`,
# `git commit`), measured side by side by one hyperfine run and reported as the ratio.
#
#   bench/iteration-overhead.sh           # both repositories
#   bench/iteration-overhead.sh small     # a repository of a few files
#   bench/iteration-overhead.sh 50k       # a repository of 50,000 files (generated once, cached)
#
# The agent appends a line to work.txt and exits; the check is `true`. Each hyperfine run is a
# fresh `ralph run --new-run --max-iterations N` (start-up included) on a repository that keeps
# its history, against N rounds of the bare loop on a twin repository.
source "$(dirname "$0")/lib.sh"
need hyperfine "apt-get install hyperfine"
build
scratch
cases=("${@:-small 50k}")
read -r -a cases <<< "${cases[*]}"

# The big repository: 500 folders of 100 small files, committed and packed, kept in the cache.
big_template() {
  local files=$1 dir=$CACHE_DIR/repo-$1
  if [ ! -d "$dir/.git" ]; then
    echo "generating $dir ($files files, once)..." >&2
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    python3 - "$dir.tmp" "$files" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
per = 100
for i in range(n):
    d = os.path.join(root, "src", f"mod{i // per:04}")
    if i % per == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"file{i % per:03}.rs"), "w") as f:
        f.write(f"// file {i}\npub fn f{i}() -> u32 {{ {i} }}\n")
PY
    git_init "$dir.tmp"
    git -C "$dir.tmp" add -A
    # No automatic gc in the background of the commit: the explicit one packs everything.
    git -C "$dir.tmp" -c gc.auto=0 commit -qm "$files files"
    git -C "$dir.tmp" gc -q
    mv "$dir.tmp" "$dir"
  fi
  echo "$dir"
}

agent=$WORK/agent.sh
write_agent "$agent"
write_bare_loop "$WORK/bare-loop"
write_ralph_loop "$WORK/ralph-loop"
sides=(ralph bare)
if [ -n "$BEFORE" ]; then
  write_ralph_loop "$WORK/before-loop" "$BEFORE"
  sides+=(before)
fi

for c in "${cases[@]}"; do
  case $c in
    small) n=50 runs=10 ;;
    50k) n=50 runs=5 ;;
    *) echo "unknown case $c (small | 50k)" >&2; exit 2 ;;
  esac
  [ "$QUICK" = 1 ] && n=3 runs=2
  for side in "${sides[@]}"; do
    repo=$WORK/$c-$side
    case $c in
      small) mkdir -p "$repo" && git_init "$repo" && printf 'hello\n' > "$repo/README.md" ;;
      50k)
        files=50000
        [ "$QUICK" = 1 ] && files=500
        git clone -q "$(big_template $files)" "$repo"
        ;;
    esac
    ralph_fixture "$repo" "$agent"
  done
  echo "== $c: $(git -C "$WORK/$c-ralph" ls-files | wc -l) files, $n iterations a run, $runs runs; $(load)"
  extra=()
  [ -n "$BEFORE" ] && extra=(-n "ralph before $c" "$WORK/before-loop $WORK/$c-before $n")
  hyperfine --style basic --warmup 1 --runs "$runs" --export-json "$WORK/$c.json" \
    -n "ralph $c" "$WORK/ralph-loop $WORK/$c-ralph $n" \
    -n "bare $c" "$WORK/bare-loop $WORK/$c-bare $agent $n" "${extra[@]}"
  if [ -n "$BEFORE" ]; then
    before_s=$(median_of "$WORK/$c.json" 2)
    python3 -c "b,r,n=$before_s,$(median_of "$WORK/$c.json" 1),$n; print(f'$c: ralph before: {b/n*1000:.1f} ms/iteration, ratio {b/r:.2f}')"
  fi
  ralph_s=$(median_of "$WORK/$c.json" 0)
  bare_s=$(median_of "$WORK/$c.json" 1)
  read -r ralph_ms bare_ms ratio < <(python3 -c "r,b,n=$ralph_s,$bare_s,$n; print(f'{r/n*1000:.1f} {b/n*1000:.1f} {r/b:.2f}')")
  target=1.3
  [ "$c" = 50k ] && target=1.1
  echo "$c: ralph $ralph_ms ms/iteration, bare loop $bare_ms ms/iteration, ratio $ratio (target $target); $(load)"
  figure "per-iteration overhead, $c repo" "≤ ${target}×" "${ratio}× (ralph $ralph_ms ms, bare $bare_ms ms)" "$(verdict "$ratio" '<=' "$target")"
done
