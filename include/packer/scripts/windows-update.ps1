# One round of Windows updates for a golden image, through the Windows Update Agent API
# (Microsoft.Update.Session): search, download, install. Run by Packer's powershell provisioner
# as an elevated scheduled task (the WUA API refuses to download or install in a WinRM network
# logon). See packer/windows-winrm.pkr.hcl for the rounds.
#
# Environment (set by the template):
#   UPDATE_POLICY         security | all   (security: an MSRC severity, or in the categories
#                                          'Security Updates' / 'Critical Updates')
#   GOLDEN_UPDATE_MODE    install | verify (verify installs nothing: it fails while updates of
#                                          the policy are pending or a reboot is)
#   GOLDEN_UPDATE_ROUND   this round's number, from 1
#   GOLDEN_UPDATE_ROUNDS  how many install rounds the family runs (later ones do nothing)
#
# Output, one line each (read by the pipeline's log and manifest):
#   golden-update: KB5034439 2024-01 Cumulative Update for Microsoft server operating system ...
#   golden-update-failed: KB5034439 <title> (Failed, 0x80240022)
#   golden-update-pending: KB5034439 <title>                      (verify mode)
#   golden-update-reboot: required
#   golden-update-summary: round=1 mode=install policy=all found=3 installed=3 failed=0 reboot=true
# Exit codes: 0 done; 3010 done and a reboot is needed (the marker file is written: the next
# windows-restart reboots); 1 an error, or (verify) updates or a reboot still pending.

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version 3.0
$ProgressPreference = 'SilentlyContinue'

$RebootMarker = Join-Path $env:SystemRoot 'Temp\golden-reboot-required'
$SecurityCategories = @('Security Updates', 'Critical Updates')
$Criteria = "IsInstalled=0 and Type='Software' and IsHidden=0"
$ResultNames = @{ 0 = 'NotStarted'; 1 = 'InProgress'; 2 = 'Succeeded'; 3 = 'SucceededWithErrors'; 4 = 'Failed'; 5 = 'Aborted' }

function Get-Setting {
    param([string]$Name, [string]$Default)
    $value = [Environment]::GetEnvironmentVariable($Name)
    if ([string]::IsNullOrWhiteSpace($value)) { return $Default }
    return $value.Trim()
}

function Test-SecurityUpdate {
    param($Update)
    if (-not [string]::IsNullOrEmpty($Update.MsrcSeverity)) { return $true }
    foreach ($category in $Update.Categories) {
        if ($SecurityCategories -contains $category.Name) { return $true }
    }
    return $false
}

$DefinitionUpdates = 'e0789628-ce08-4437-be74-2495b842f43b'  # the "Definition Updates" classification

function Get-UpdateName {
    param($Update)
    $ids = @($Update.KBArticleIDs)
    $kb = if ($ids.Count -gt 0) { 'KB' + $ids[0] } else { 'KB-none' }
    return '{0} {1}' -f $kb, $Update.Title
}

function Test-RebootPending {
    $keys = @(
        'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending',
        'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired'
    )
    foreach ($key in $keys) {
        if (Test-Path -LiteralPath $key) { return $true }
    }
    try {
        return [bool](New-Object -ComObject Microsoft.Update.SystemInfo).RebootRequired
    } catch {
        return $false
    }
}

function Write-Summary {
    param([int]$Found, [int]$Installed, [int]$Failed, [bool]$Reboot, [string]$Note = '')
    $line = 'golden-update-summary: round={0} mode={1} policy={2} found={3} installed={4} failed={5} reboot={6}' -f `
        $round, $mode, $policy, $Found, $Installed, $Failed, $Reboot.ToString().ToLowerInvariant()
    if ($Note) { $line = "$line $Note" }
    Write-Output $line
}

$policy = (Get-Setting -Name 'UPDATE_POLICY' -Default 'all').ToLowerInvariant()
$mode = (Get-Setting -Name 'GOLDEN_UPDATE_MODE' -Default 'install').ToLowerInvariant()
$round = [int](Get-Setting -Name 'GOLDEN_UPDATE_ROUND' -Default '1')
$rounds = [int](Get-Setting -Name 'GOLDEN_UPDATE_ROUNDS' -Default '5')
if ($policy -notin @('security', 'all')) {
    Write-Output "golden-update-error: UPDATE_POLICY must be security or all (got '$policy')"
    exit 1
}
if ($mode -notin @('install', 'verify')) {
    Write-Output "golden-update-error: GOLDEN_UPDATE_MODE must be install or verify (got '$mode')"
    exit 1
}

if ($mode -eq 'install' -and $round -gt $rounds) {
    Write-Summary -Found 0 -Installed 0 -Failed 0 -Reboot $false -Note "skipped=true (update_rounds=$rounds)"
    exit 0
}

$session = New-Object -ComObject Microsoft.Update.Session
$session.ClientApplicationID = 'golden-image'
try {
    $result = $session.CreateUpdateSearcher().Search($Criteria)
} catch {
    Write-Output ('golden-update-error: searching for updates failed: {0}' -f $_.Exception.Message)
    exit 1
}

$wanted = New-Object -ComObject Microsoft.Update.UpdateColl
foreach ($update in $result.Updates) {
    # Defender's security intelligence ("Definition Updates") is published several times a day and
    # updated by the running instance itself; optional (BrowseOnly) updates are never "pending"
    if ($update.BrowseOnly -or @($update.Categories | Where-Object { $_.CategoryID -eq $DefinitionUpdates }).Count -gt 0) {
        continue
    }
    if ($policy -eq 'all' -or (Test-SecurityUpdate -Update $update)) {
        [void]$wanted.Add($update)
    }
}

if ($mode -eq 'verify') {
    foreach ($update in $wanted) {
        Write-Output ('golden-update-pending: {0}' -f (Get-UpdateName -Update $update))
    }
    $reboot = Test-RebootPending
    Write-Summary -Found $wanted.Count -Installed 0 -Failed 0 -Reboot $reboot
    if ($wanted.Count -gt 0) {
        Write-Output ('golden-update-error: {0} update(s) still pending after {1} round(s): raise update_rounds (at most 5) or look at the failures above' -f $wanted.Count, $rounds)
        exit 1
    }
    if ($reboot) {
        Write-Output 'golden-update-error: a reboot is still pending after the last round'
        exit 1
    }
    exit 0
}

if ($wanted.Count -eq 0) {
    $reboot = Test-RebootPending
    if ($reboot) {
        New-Item -ItemType File -Force -Path $RebootMarker | Out-Null
        Write-Output 'golden-update-reboot: required'
    }
    Write-Summary -Found 0 -Installed 0 -Failed 0 -Reboot $reboot
    if ($reboot) { exit 3010 }
    exit 0
}

foreach ($update in $wanted) {
    if (-not $update.EulaAccepted) { $update.AcceptEula() }
}

try {
    $downloader = $session.CreateUpdateDownloader()
    $downloader.Updates = $wanted
    [void]$downloader.Download()
} catch {
    Write-Output ('golden-update-error: downloading updates failed: {0}' -f $_.Exception.Message)
    exit 1
}

$ready = New-Object -ComObject Microsoft.Update.UpdateColl
foreach ($update in $wanted) {
    if ($update.IsDownloaded) { [void]$ready.Add($update) }
    else { Write-Output ('golden-update-failed: {0} (not downloaded)' -f (Get-UpdateName -Update $update)) }
}

$installed = 0
$failed = $wanted.Count - $ready.Count
$reboot = $false
if ($ready.Count -gt 0) {
    try {
        $installer = $session.CreateUpdateInstaller()
        $installer.Updates = $ready
        $outcome = $installer.Install()
    } catch {
        Write-Output ('golden-update-error: installing updates failed: {0}' -f $_.Exception.Message)
        exit 1
    }
    for ($i = 0; $i -lt $ready.Count; $i++) {
        $update = $ready.Item($i)
        $one = $outcome.GetUpdateResult($i)
        if ($one.ResultCode -eq 2 -or $one.ResultCode -eq 3) {
            $installed++
            Write-Output ('golden-update: {0}' -f (Get-UpdateName -Update $update))
        } else {
            $failed++
            Write-Output ('golden-update-failed: {0} ({1}, 0x{2:X8})' -f (Get-UpdateName -Update $update), $ResultNames[[int]$one.ResultCode], $one.HResult)
        }
    }
    $reboot = [bool]$outcome.RebootRequired
}
$reboot = $reboot -or (Test-RebootPending)
if ($reboot) {
    New-Item -ItemType File -Force -Path $RebootMarker | Out-Null
    Write-Output 'golden-update-reboot: required'
}
Write-Summary -Found $wanted.Count -Installed $installed -Failed $failed -Reboot $reboot
if ($reboot) { exit 3010 }
exit 0
