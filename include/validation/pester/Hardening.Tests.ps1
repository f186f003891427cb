# Hardening every Windows family has: SMBv1 off, TLS 1.0/1.1 off, RDP with NLA.
Describe 'SMBv1' {
    It 'is off in the SMB server configuration' {
        (Get-SmbServerConfiguration).EnableSMB1Protocol | Should -BeFalse
    }

    It 'is not an installed feature' {
        $feature = Get-WindowsFeature -Name FS-SMB1
        if ($null -ne $feature) { $feature.Installed | Should -BeFalse }
    }
}

Describe 'SCHANNEL protocols' {
    It '<Protocol> <Side> is disabled' -ForEach @(
        @{ Protocol = 'TLS 1.0'; Side = 'Server' }, @{ Protocol = 'TLS 1.0'; Side = 'Client' },
        @{ Protocol = 'TLS 1.1'; Side = 'Server' }, @{ Protocol = 'TLS 1.1'; Side = 'Client' }
    ) {
        $key = "HKLM:\SYSTEM\CurrentControlSet\Control\SecurityProviders\SCHANNEL\Protocols\$Protocol\$Side"
        (Get-ItemProperty -LiteralPath $key -Name Enabled).Enabled | Should -Be 0
        (Get-ItemProperty -LiteralPath $key -Name DisabledByDefault).DisabledByDefault | Should -Be 1
    }

    It 'TLS 1.2 Server is enabled' {
        $key = 'HKLM:\SYSTEM\CurrentControlSet\Control\SecurityProviders\SCHANNEL\Protocols\TLS 1.2\Server'
        (Get-ItemProperty -LiteralPath $key -Name Enabled).Enabled | Should -Be 1
    }
}

Describe 'Remote Desktop' {
    It 'requires Network Level Authentication' {
        $key = 'HKLM:\SYSTEM\CurrentControlSet\Control\Terminal Server\WinStations\RDP-Tcp'
        (Get-ItemProperty -LiteralPath $key -Name UserAuthentication).UserAuthentication | Should -Be 1
    }
}
