# Invoke-Pester over the uploaded suites, NUnit XML and a summary of the result object into $Dir.
# Set by the hook's prelude: $Dir; everything else comes from run.json.
$settings = Get-Content -LiteralPath (Join-Path $Dir 'run.json') -Raw -Encoding UTF8 | ConvertFrom-Json
Get-Module -Name Pester | Remove-Module -Force
Import-Module -Name Pester -RequiredVersion ([version] $settings.pester_version) -Force
$configuration = New-PesterConfiguration
$configuration.Run.Path = [string[]] @($settings.paths)
$configuration.Run.PassThru = $true
$configuration.Run.Exit = $false
$configuration.TestResult.Enabled = $true
$configuration.TestResult.OutputFormat = [string] $settings.output_format
$configuration.TestResult.OutputPath = [string] $settings.output_path
$configuration.Output.Verbosity = 'Detailed'
$configuration.Output.RenderMode = 'Plaintext'
# the suites run with PowerShell's default error handling, not this script's
$ErrorActionPreference = 'Continue'
try {
    $result = Invoke-Pester -Configuration $configuration
}
catch {
    [Console]::Error.WriteLine("Invoke-Pester failed: $_")
    exit 2
}
$ErrorActionPreference = 'Stop'
$containers = foreach ($container in $result.Containers) {
    $path = if ('File' -eq $container.Type) { $container.Item.FullName } else { [string] $container.Item }
    [ordered]@{
        path     = $path
        result   = [string] $container.Result
        executed = [bool] $container.Executed
        tests    = [int] $container.TotalCount
        errors   = @($container.ErrorRecord | ForEach-Object { [string] $_ })
    }
}
$blocks = foreach ($block in $result.FailedBlocks) {
    [ordered]@{
        path   = ($block.Path -join '.')
        file   = [string] $block.ScriptBlock.File
        errors = @($block.ErrorRecord | ForEach-Object { [string] $_ })
    }
}
$summary = [ordered]@{
    version           = [string] $result.Version
    result            = [string] $result.Result
    total             = [int] $result.TotalCount
    passed            = [int] $result.PassedCount
    failed            = [int] $result.FailedCount
    skipped           = [int] $result.SkippedCount
    not_run           = [int] $result.NotRunCount
    failed_blocks     = [int] $result.FailedBlocksCount
    failed_containers = [int] $result.FailedContainersCount
    containers        = @($containers)
    blocks            = @($blocks)
}
$summary | ConvertTo-Json -Depth 6 | Set-Content -LiteralPath ([string] $settings.summary_path) -Encoding UTF8
exit 0
