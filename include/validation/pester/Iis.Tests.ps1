# The IIS flavour: IIS installed and running, the ASP.NET Core Module registered with it.
Describe 'IIS' {
    It 'has the Web-Server feature' {
        (Get-WindowsFeature -Name Web-Server).Installed | Should -BeTrue
    }

    It '<_> is running and starts automatically' -ForEach @('W3SVC', 'WAS') {
        $service = Get-CimInstance -ClassName Win32_Service -Filter "Name='$_'"
        $service.State | Should -Be 'Running'
        $service.StartMode | Should -Be 'Auto'
    }

    It 'answers on port 80' {
        try {
            $status = (Invoke-WebRequest -Uri 'http://localhost/' -UseBasicParsing).StatusCode
        } catch [System.Net.WebException] {
            $status = [int]$_.Exception.Response.StatusCode
        }
        $status | Should -BeIn @(200, 403, 404)
    }
}

Describe 'ASP.NET Core hosting' {
    It 'has the ASP.NET Core Module V2' {
        'C:\Program Files\IIS\Asp.Net Core Module\V2\aspnetcorev2.dll' | Should -Exist
    }

    It 'has an ASP.NET Core 8 runtime' {
        $output = & 'C:\Program Files\dotnet\dotnet.exe' --list-runtimes
        ($output -join "`n") | Should -Match 'Microsoft\.AspNetCore\.App 8\.\d+\.\d+'
    }
}
