# Patched: no Windows update pending and no reboot pending on the fresh test instance.
BeforeAll {
    function Test-RebootPending {
        $keys = @(
            'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending',
            'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired'
        )
        foreach ($key in $keys) {
            if (Test-Path -LiteralPath $key) { return $true }
        }
        $rename = Get-ItemProperty -LiteralPath 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager' -Name PendingFileRenameOperations -ErrorAction SilentlyContinue
        return ($null -ne $rename -and @($rename.PendingFileRenameOperations).Count -gt 0)
    }
}

Describe 'Windows updates' {
    It 'has no reboot pending' {
        Test-RebootPending | Should -BeFalse
    }

    It 'has no software update pending' {
        $session = New-Object -ComObject Microsoft.Update.Session
        $result = $session.CreateUpdateSearcher().Search("IsInstalled=0 and Type='Software' and IsHidden=0")
        # not Defender's definitions (several a day; the instance updates them itself), not optional ones
        $definitions = 'e0789628-ce08-4437-be74-2495b842f43b'
        $pending = @($result.Updates |
            Where-Object { -not $_.BrowseOnly -and -not @($_.Categories | Where-Object { $_.CategoryID -eq $definitions }).Count } |
            ForEach-Object { $_.Title })
        $pending | Should -BeNullOrEmpty -Because "these updates are pending: $($pending -join '; ')"
    }
}
