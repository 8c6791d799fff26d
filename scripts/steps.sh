# Progress lines for the install scripts, the shape the CLI prints too (partypilot/progress.py):
# `==> what: how (about N s)` when a step starts and `==> what: done in N s` when it ends.
# Sourced, not run.

step_begin() {
  _step_title=$1
  _step_started=$SECONDS
  echo "==> $1: $2"
}

step_end() {
  echo "==> $_step_title: done in $((SECONDS - _step_started)) s"
}
