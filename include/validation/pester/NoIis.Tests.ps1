# The base .NET image has no web server: IIS comes only with the -iis flavour.
Describe 'IIS' {
    It 'is not installed' {
        (Get-WindowsFeature -Name Web-Server).Installed | Should -BeFalse
    }

    It 'has no W3SVC service' {
        Get-Service -Name W3SVC -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
    }
}
