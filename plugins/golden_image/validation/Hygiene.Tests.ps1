#Requires -Version 5.1
<#
.SYNOPSIS
    Built-in image-hygiene checks, run with Pester 5 on a fresh, booted test instance of every
    Windows image (the Windows twin of test_hygiene.py).

.DESCRIPTION
    The test instance has booted once from the image and made what every Windows machine makes
    at first boot: its own EC2Launch logs and state, its own WinRM certificate (from its user
    data), its own Administrator password, event-log records, logons of this very WinRM session.
    What it made since it booted is its own; what is OLDER THAN ITS BOOT came with the image. So
    every check that looks at files, certificates or event records asks for things older than
    the boot (Win32_OperatingSystem.LastBootUpTime), exactly as the Linux suite does.

    Event logs, in particular: a count of records "since the last boot" cannot be checked on a
    test instance, because the boot itself, EC2Launch and these tests write hundreds of records
    (the Security log records every WinRM logon). What is checkable is how many records are
    older than this boot: if the logs were cleared before the image was captured, only the few
    written between the clearing and the shutdown are (the clear event itself, 104 / 1102,
    sysprep's and the shutdown's own records); if they were not, every build-time record is
    (Windows Update alone writes thousands). The limit is max_events_before_boot per log.

    Settings are data, never code: the hook uploads them as JSON next to this file
    (hygiene.json, from the family's validation.hygiene block) and this suite reads them with
    ConvertFrom-Json. Keys read here (all optional; allowed_credentials,
    allowed_certificate_subjects and max_events_before_boot are not fields of the spec's
    validation.hygiene yet, so a family cannot set them and their defaults apply):
      stopped_services        services baked "installed but stopped": installed, stopped, Manual
      expected_accounts       local accounts allowed beyond the built-in ones
      allowed_credentials     Credential Manager targets allowed to stay (normally none)
      allowed_certificate_subjects  self-signed LocalMachine\My keys baked on purpose
      max_events_before_boot  records older than this boot allowed per event log (default 200)
      run_directory           (set by the hook) where this run was uploaded; never a leftover
    Each check names what it found, so a failure says what to remove.
#>

BeforeAll {
    # Pester 5: what this BeforeAll defines (variables, functions) every test below sees.
    $settingsPath = Join-Path -Path $PSScriptRoot -ChildPath 'hygiene.json'
    $Settings = [pscustomobject]@{}
    if (Test-Path -LiteralPath $settingsPath) {
        $Settings = Get-Content -LiteralPath $settingsPath -Raw -Encoding UTF8 | ConvertFrom-Json
    }
    # The directory the hook uploaded this run into: its files are this run's, never leftovers.
    $RunDirectory = [string] $Settings.PSObject.Properties['run_directory'].Value
    if (-not $RunDirectory) {
        $RunDirectory = Split-Path -Path (Split-Path -Path $PSScriptRoot -Parent) -Parent
    }
    $Booted = (Get-CimInstance -ClassName Win32_OperatingSystem).LastBootUpTime
    $Sensitive = '*SENSITIVE*DATA*DELETED*'

    function Get-Setting {
        param([string] $Name, $Default = @())
        $property = $Settings.PSObject.Properties[$Name]
        if ($null -eq $property -or $null -eq $property.Value) {
            return $Default
        }
        return $property.Value
    }

    function Get-BakedFile {
        # Files under the given paths created before this instance booted: they came with the
        # image. Creation, not last write: EC2Launch appends to a baked log at boot, and the
        # build's lines are still in it.
        param([string[]] $Path, [string[]] $Include = @('*'))
        foreach ($root in $Path) {
            if (-not (Test-Path -Path $root)) {
                continue
            }
            Get-ChildItem -Path $root -Recurse -Force -File -Include $Include -ErrorAction SilentlyContinue |
                Where-Object { $_.CreationTime -lt $Booted } |
                Where-Object { -not $_.FullName.StartsWith($RunDirectory, [StringComparison]::OrdinalIgnoreCase) }
        }
    }

    function Get-AnswerFilePassword {
        # The password elements of an unattend answer file that hold a value (Windows setup
        # replaces the values in the copies it keeps with *SENSITIVE*DATA*DELETED*).
        param([string] $LiteralPath)
        $text = Get-Content -LiteralPath $LiteralPath -Raw -ErrorAction SilentlyContinue
        if ([string]::IsNullOrWhiteSpace($text)) {
            return
        }
        $document = $null
        try {
            $document = [xml] $text
        }
        catch {
            $document = $null
        }
        if ($null -eq $document) {
            # not XML: any Password element with a value counts
            $pattern = '(?is)<(?<name>\w*Password)>\s*<Value>\s*(?<value>[^<\s][^<]*)</Value>'
            foreach ($match in [regex]::Matches($text, $pattern)) {
                if ($match.Groups['value'].Value.Trim() -ne $Sensitive) {
                    $match.Groups['name'].Value
                }
            }
            return
        }
        $query = "//*[local-name()='Password' or local-name()='AdministratorPassword']/*[local-name()='Value']"
        foreach ($node in $document.SelectNodes($query)) {
            $value = $node.InnerText.Trim()
            if ($value -and $value -ne $Sensitive) {
                $node.ParentNode.LocalName
            }
        }
    }
}

Describe 'Windows image hygiene' {

    Context 'answer files' {

        It 'leaves no unattend or sysprep answer file holding a password' {
            $candidates = @(
                'C:\unattend.xml'
                'C:\autounattend.xml'
                'C:\Windows\Panther\unattend.xml'
                'C:\Windows\Panther\autounattend.xml'
                'C:\Windows\Panther\Unattend\*'
                'C:\Windows\System32\Sysprep\unattend.xml'
                'C:\Windows\System32\Sysprep\autounattend.xml'
                'C:\Windows\System32\Sysprep\Panther\*.xml'
                'C:\ProgramData\Amazon\EC2Launch\sysprep\*.xml'
            )
            $found = foreach ($candidate in $candidates) {
                foreach ($file in Get-Item -Path $candidate -Force -ErrorAction SilentlyContinue) {
                    if ($file.PSIsContainer) {
                        continue
                    }
                    foreach ($element in Get-AnswerFilePassword -LiteralPath $file.FullName) {
                        "$($file.FullName) ($element)"
                    }
                }
            }
            @($found) | Should -BeNullOrEmpty -Because 'an answer file with a password gives every instance that password'
        }

        It 'keeps no password in the EC2Launch v2 agent config' {
            # setAdminAccount takes "password: {type: random}" (fine), "type: static" with the
            # password in "data", or (older configs) the password as a plain value
            $config = 'C:\ProgramData\Amazon\EC2Launch\config\agent-config.yml'
            $found = @()
            if (Test-Path -LiteralPath $config) {
                $text = Get-Content -LiteralPath $config -Raw
                if ($text -match '(?im)\btype\s*:\s*[''"]?static\b') {
                    $found += "$config (setAdminAccount password of type static)"
                }
                if ($text -match '(?im)^\s*-?\s*password\s*:[ \t]*[^\s#{]') {
                    $found += "$config (a password value)"
                }
            }
            $found | Should -BeNullOrEmpty -Because 'EC2Launch must make a random password, read back with EC2 GetPasswordData'
        }
    }

    Context 'credentials' {

        It 'leaves no credential in Windows Credential Manager' {
            $allowed = @(Get-Setting -Name 'allowed_credentials')
            $listing = & cmdkey.exe /list 2>&1 | Out-String
            $targets = foreach ($line in $listing -split '\r?\n') {
                if ($line -match '^\s*Target:\s*(?<target>.+?)\s*$') {
                    $target = $Matches['target']
                    if ($allowed -notcontains $target) {
                        $target
                    }
                }
            }
            @($targets) | Should -BeNullOrEmpty -Because 'credentials stored at build time ship to every instance'
        }

        It 'leaves no credential files from the build in any profile' {
            # cmdkey lists the vault of this session's user only; the files are every user's
            # (and SYSTEM's). Each vault's Policy.vpol is made with the profile: only its
            # credentials (*.vcrd) count.
            $found = @(
                Get-BakedFile -Path @(
                    'C:\Users\*\AppData\Local\Microsoft\Credentials'
                    'C:\Users\*\AppData\Roaming\Microsoft\Credentials'
                    'C:\Windows\System32\config\systemprofile\AppData\Local\Microsoft\Credentials'
                    'C:\Windows\ServiceProfiles\*\AppData\Local\Microsoft\Credentials'
                )
                Get-BakedFile -Path @(
                    'C:\Users\*\AppData\Local\Microsoft\Vault'
                    'C:\Windows\System32\config\systemprofile\AppData\Local\Microsoft\Vault'
                ) -Include @('*.vcrd')
            ) | ForEach-Object { $_.FullName }
            $found | Should -BeNullOrEmpty -Because 'stored (WinRM, RDP, share) credentials were saved while the image was built'
        }

        It 'stores no automatic logon password and no saved RDP password' {
            $found = @()
            $winlogon = Get-ItemProperty -Path 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Winlogon' -ErrorAction SilentlyContinue
            if ($null -ne $winlogon) {
                if ($winlogon.PSObject.Properties['DefaultPassword']) {
                    $found += 'Winlogon DefaultPassword is set'
                }
                if ("$($winlogon.AutoAdminLogon)" -eq '1') {
                    $found += 'Winlogon AutoAdminLogon is 1'
                }
            }
            $rdpFiles = Get-ChildItem -Path 'C:\Users' -Recurse -Force -File -Filter '*.rdp' -ErrorAction SilentlyContinue
            foreach ($file in $rdpFiles) {
                if (Select-String -LiteralPath $file.FullName -Pattern '^password 51:b:' -Quiet) {
                    $found += "$($file.FullName) holds a saved password"
                }
            }
            $found | Should -BeNullOrEmpty -Because 'a password baked into the registry or a file is readable on every instance'
        }

        It 'carries no WinRM certificate or private key from the build' {
            # The builder's WinRM certificate and key were made by its user data; every instance
            # makes its own at boot. Allowing for a back-dated NotBefore, a self-signed key
            # issued more than 30 minutes before this boot came with the image. A family that
            # bakes one deliberately lists its subject in allowed_certificate_subjects.
            $allowed = @(Get-Setting -Name 'allowed_certificate_subjects')
            $cutoff = $Booted.AddMinutes(-30)
            $found = Get-ChildItem -Path 'Cert:\LocalMachine\My' -ErrorAction SilentlyContinue |
                Where-Object { $_.HasPrivateKey -and $_.NotBefore -lt $cutoff -and $_.Subject -eq $_.Issuer } |
                Where-Object { $allowed -notcontains $_.Subject } |
                ForEach-Object { "$($_.Subject) $($_.Thumbprint) issued $($_.NotBefore.ToString('s'))" }
            @($found) | Should -BeNullOrEmpty -Because 'a baked self-signed key lets anyone holding the image impersonate every instance'
        }
    }

    Context 'user data' {

        It 'leaves no user data, its copies or its logs from the build on disk' {
            $found = @(
                Get-BakedFile -Path @(
                    'C:\ProgramData\Amazon\EC2Launch\log'
                    'C:\ProgramData\Amazon\EC2Launch\state'
                    'C:\ProgramData\Amazon\EC2-Windows\Launch\Log'
                    'C:\Program Files\Amazon\Ec2ConfigService\Logs'
                )
                Get-BakedFile -Path @(
                    'C:\Windows\Temp'
                    'C:\Windows\System32\config\systemprofile\AppData\Local\Temp'
                    'C:\Users\*\AppData\Local\Temp'
                ) -Include @('*userdata*', '*user-data*', 'UserScript*', '*unattend*', 'packer-*', 'script-*.ps1')
            ) | ForEach-Object { $_.FullName }
            $found | Should -BeNullOrEmpty -Because 'the build instance''s user data and its output ship with the image otherwise'
        }
    }

    Context 'services' {

        It 'has the baked agents installed, stopped and set to Manual' {
            $services = @(Get-Setting -Name 'stopped_services')
            if ($services.Count -eq 0) {
                Set-ItResult -Skipped -Because 'the family lists no stopped_services'
                return
            }
            $problems = foreach ($name in $services) {
                $service = Get-Service -Name $name -ErrorAction SilentlyContinue
                if ($null -eq $service) {
                    "$name is not installed"
                    continue
                }
                if ($service.Status -ne 'Stopped') {
                    "$name is $($service.Status)"
                }
                if ("$($service.StartType)" -ne 'Manual') {
                    "$name starts $($service.StartType), not Manual"
                }
            }
            @($problems) | Should -BeNullOrEmpty -Because 'agents are baked installed but stopped; configuration management starts them'
        }
    }

    Context 'accounts' {

        It 'has no local accounts beyond the built-in and the expected ones' {
            # built-in by name and by relative id: 500 Administrator, 501 Guest,
            # 503 DefaultAccount, 504 WDAGUtilityAccount (the name may be changed, the id not)
            $builtIn = @('Administrator', 'DefaultAccount', 'Guest', 'WDAGUtilityAccount')
            $expected = @(Get-Setting -Name 'expected_accounts')
            $extra = Get-LocalUser | Where-Object {
                $rid = $_.SID.Value.Split('-')[-1]
                ($builtIn -notcontains $_.Name) -and ($expected -notcontains $_.Name) -and
                (@('500', '501', '503', '504') -notcontains $rid)
            } | ForEach-Object { $_.Name }
            @($extra) | Should -BeNullOrEmpty -Because 'accounts made while building must be removed (or listed in expected_accounts)'
        }

        It 'keeps the Guest and DefaultAccount accounts disabled' {
            $enabled = Get-LocalUser | Where-Object {
                $_.Enabled -and (@('501', '503') -contains $_.SID.Value.Split('-')[-1])
            } | ForEach-Object { $_.Name }
            @($enabled) | Should -BeNullOrEmpty
        }
    }

    Context 'event logs' {

        It 'was captured with cleared event logs' {
            $limit = [int] (Get-Setting -Name 'max_events_before_boot' -Default 200)
            $found = foreach ($log in 'Application', 'System', 'Security') {
                $filter = @{ LogName = $log; EndTime = $Booted }
                $older = @(Get-WinEvent -FilterHashtable $filter -MaxEvents ($limit + 1) -ErrorAction SilentlyContinue)
                if ($older.Count -gt $limit) {
                    "$log has more than $limit records from before this boot (clear it before sysprep: wevtutil cl $log)"
                }
            }
            @($found) | Should -BeNullOrEmpty -Because 'build-time event records (commands, accounts, paths) ship with the image otherwise'
        }
    }

    Context 'reboot' {

        It 'has no pending reboot' {
            $found = @()
            if (Test-Path -Path 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending') {
                $found += 'Component Based Servicing: RebootPending'
            }
            if (Test-Path -Path 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired') {
                $found += 'Windows Update: RebootRequired'
            }
            $manager = Get-ItemProperty -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager' -ErrorAction SilentlyContinue
            $renames = @($manager.PendingFileRenameOperations | Where-Object { $_ })
            if ($renames.Count -gt 0) {
                $found += "Session Manager: PendingFileRenameOperations ($($renames.Count) entries, first $($renames[0]))"
            }
            $active = (Get-ItemProperty -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\ComputerName\ActiveComputerName' -ErrorAction SilentlyContinue).ComputerName
            $pending = (Get-ItemProperty -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\ComputerName\ComputerName' -ErrorAction SilentlyContinue).ComputerName
            if ($active -and $pending -and $active -ne $pending) {
                $found += "computer rename pending ($active -> $pending)"
            }
            $found | Should -BeNullOrEmpty -Because 'an image that needs a reboot was captured before its updates finished'
        }
    }
}
