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
        $pending = @($result.Updates | ForEach-Object { $_.Title })
        $pending | Should -BeNullOrEmpty -Because "these updates are pending: $($pending -join '; ')"
    }
}
