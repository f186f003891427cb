# The deployment and monitoring agents are installed, stopped and set to manual: configuration
# management registers and starts them at boot. Nothing of theirs that is secret is baked.
Describe 'Agents baked but stopped' {
    It '<_> is installed' -ForEach @('OctopusDeploy Tentacle', 'datadogagent') {
        Get-Service -Name $_ -ErrorAction SilentlyContinue | Should -Not -BeNullOrEmpty
    }

    It '<_> is stopped' -ForEach @('OctopusDeploy Tentacle', 'datadogagent') {
        (Get-Service -Name $_).Status | Should -Be 'Stopped'
    }

    It '<_> starts manually' -ForEach @('OctopusDeploy Tentacle', 'datadogagent') {
        (Get-CimInstance -ClassName Win32_Service -Filter "Name='$_'").StartMode | Should -Be 'Manual'
    }
}

Describe 'No agent secrets baked' {
    It 'has no Datadog API key in datadog.yaml' {
        $config = 'C:\ProgramData\Datadog\datadog.yaml'
        if (Test-Path -LiteralPath $config) {
            $keys = Select-String -LiteralPath $config -Pattern '^\s*api_key:\s*[0-9a-fA-F]{32}\s*$'
            $keys | Should -BeNullOrEmpty
        }
    }

    It 'has no registered Tentacle instance (no certificate, no server thumbprint)' {
        $instances = 'HKLM:\SOFTWARE\Octopus\Tentacle'
        if (Test-Path -LiteralPath $instances) {
            @(Get-ChildItem -LiteralPath $instances).Count | Should -Be 0
        }
    }
}
