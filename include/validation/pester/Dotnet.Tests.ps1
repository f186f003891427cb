# .NET on every Windows family: the .NET 8 runtime and the .NET Framework 4.8.1.
BeforeAll {
    $script:RuntimeMajor = 8
    $script:FrameworkRelease = 533320   # .NET Framework 4.8.1
}

Describe '.NET runtime' {
    It 'has a .NET 8 runtime (Microsoft.NETCore.App)' {
        $shared = 'C:\Program Files\dotnet\shared\Microsoft.NETCore.App'
        $shared | Should -Exist
        $versions = @(Get-ChildItem -LiteralPath $shared -Directory | ForEach-Object { [version]($_.Name -replace '-.*$', '') })
        ($versions | Where-Object { $_.Major -eq $script:RuntimeMajor }).Count | Should -BeGreaterThan 0
    }

    It 'runs dotnet --list-runtimes' {
        $output = & 'C:\Program Files\dotnet\dotnet.exe' --list-runtimes
        $LASTEXITCODE | Should -Be 0
        ($output -join "`n") | Should -Match "Microsoft\.NETCore\.App $($script:RuntimeMajor)\.\d+\.\d+"
    }
}

Describe '.NET Framework' {
    It 'is 4.8.1 or later' {
        $release = (Get-ItemProperty -LiteralPath 'HKLM:\SOFTWARE\Microsoft\NET Framework Setup\NDP\v4\Full' -Name Release).Release
        $release | Should -BeGreaterOrEqual $script:FrameworkRelease
    }

    It 'lets .NET use the operating system TLS settings (strong crypto)' {
        (Get-ItemProperty -LiteralPath 'HKLM:\SOFTWARE\Microsoft\.NETFramework\v4.0.30319' -Name SchUseStrongCrypto).SchUseStrongCrypto | Should -Be 1
    }
}
