# Pester of the pinned version, installed unless present. Set by the hook's prelude: $Dir;
# everything else comes from run.json (data, never PowerShell source).
$settings = Get-Content -LiteralPath (Join-Path $Dir 'run.json') -Raw -Encoding UTF8 | ConvertFrom-Json
$version = [version] $settings.pester_version
$repository = [string] $settings.repository.name
if (Get-Module -ListAvailable -Name Pester | Where-Object { $_.Version -eq $version }) {
    Write-Output "Pester $version is installed"
    exit 0
}
try {
    $tls12 = [Net.SecurityProtocolType]::Tls12
    [Net.ServicePointManager]::SecurityProtocol = [Net.ServicePointManager]::SecurityProtocol -bor $tls12
    $nuget = Get-PackageProvider -ListAvailable -Name NuGet -ErrorAction SilentlyContinue |
        Where-Object { $_.Version -ge [version] '2.8.5.201' }
    if (-not $nuget) {
        Install-PackageProvider -Name NuGet -MinimumVersion 2.8.5.201 -Force -Scope CurrentUser | Out-Null
    }
    if ($settings.repository.url -and -not (Get-PSRepository -Name $repository -ErrorAction SilentlyContinue)) {
        Register-PSRepository -Name $repository -SourceLocation ([string] $settings.repository.url) -InstallationPolicy Trusted
    }
    Install-Module -Name Pester -RequiredVersion $version -Repository $repository -Scope CurrentUser -Force -SkipPublisherCheck -AllowClobber
}
catch {
    [Console]::Error.WriteLine("installing Pester $version from $repository failed: $_")
    exit 3
}
Write-Output "Pester $version installed from $repository"
exit 0
