# What capture records of a Windows builder, as one JSON document: the OS (edition, version,
# build and update revision), the installed updates (hotfixes), the installed programs (MSI and
# other installers, from the registry's Uninstall keys), the installed Windows features, and the
# services. Read only; bounded (at most 5000 entries a list).
$ErrorActionPreference = 'Stop'
$os = Get-CimInstance -ClassName Win32_OperatingSystem
$current = Get-ItemProperty -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion'
$programs = foreach ($key in 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall\*',
                            'HKLM:\SOFTWARE\WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall\*') {
    Get-ItemProperty -Path $key -ErrorAction SilentlyContinue |
        Where-Object { $_.DisplayName -and -not $_.SystemComponent } |
        ForEach-Object { [pscustomobject]@{ name = [string]$_.DisplayName; version = [string]$_.DisplayVersion; publisher = [string]$_.Publisher } }
}
$features = @()
if (Get-Command -Name Get-WindowsFeature -ErrorAction SilentlyContinue) {
    $features = Get-WindowsFeature | Where-Object Installed | ForEach-Object { [string]$_.Name }
}
[pscustomobject]@{
    os = [pscustomobject]@{
        caption = [string]$os.Caption
        version = [string]$os.Version
        build = [string]$os.BuildNumber
        ubr = [string]$current.UBR
        display_version = [string]$current.DisplayVersion
        edition = [string]$current.EditionID
        installation_type = [string]$current.InstallationType
        architecture = [string]$os.OSArchitecture
    }
    hotfixes = @(Get-HotFix | Select-Object -First 5000 | ForEach-Object { [pscustomobject]@{ id = [string]$_.HotFixID; description = [string]$_.Description; installed_on = [string]$_.InstalledOn } })
    programs = @($programs | Sort-Object name -Unique | Select-Object -First 5000)
    features = @($features | Select-Object -First 5000)
    services = @(Get-Service | Select-Object -First 5000 | ForEach-Object { [pscustomobject]@{ name = [string]$_.Name; status = [string]$_.Status; start_type = [string]$_.StartType } })
} | ConvertTo-Json -Depth 4 -Compress
