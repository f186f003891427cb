# Remove the run directory. Set by the hook's prelude: $Dir.
if (Test-Path -LiteralPath $Dir) {
    Remove-Item -LiteralPath $Dir -Recurse -Force
}
if (Test-Path -LiteralPath $Dir) {
    exit 1
}
exit 0
