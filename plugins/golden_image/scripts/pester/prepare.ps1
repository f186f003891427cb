# The run directory and one folder per suite. Set by the hook's prelude: $Dir, $Count.
New-Item -ItemType Directory -Path $Dir -Force | Out-Null
foreach ($index in @(0..($Count - 1) | Where-Object { $_ -ge 0 })) {
    New-Item -ItemType Directory -Path (Join-Path $Dir ('suites\{0:d2}' -f $index)) -Force | Out-Null
}
exit 0
