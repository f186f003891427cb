# Generalise a Windows builder for capture, the EC2Launch v2 way: remove what the pipeline's user
# data added (the WinRM/HTTPS listener, its certificate, the firewall rule, Basic auth) and what
# an interrupted Packer elevated run leaves (its scheduled task, registered with the Administrator
# password, and its wrapper script in Temp, which holds that password in clear), then
# `EC2Launch.exe sysprep --clean --shutdown`: sysprep /generalize with EC2Launch's answer file,
# instance logs and user-data history removed, and the instance shut down; the worker waits
# for `stopped` and creates the image. It runs as a one-shot scheduled task as SYSTEM, because
# a process started from the WinRM session would be killed when the session closes, and the
# listener this session uses goes away. Prints one JSON line: what was scheduled.
$ErrorActionPreference = 'Stop'
$ec2launch = Join-Path $env:ProgramFiles 'Amazon\EC2Launch\EC2Launch.exe'
if (-not (Test-Path -LiteralPath $ec2launch)) {
    throw "EC2Launch v2 is not installed ($ec2launch): use an AMI with EC2Launch v2 (Amazon's Windows Server 2022 AMIs have it)"
}
$version = (Get-Item -LiteralPath $ec2launch).VersionInfo.ProductVersion
$script = Join-Path $env:WINDIR 'Temp\golden-sysprep.ps1'
Set-Content -LiteralPath $script -Encoding UTF8 -Value @'
$ErrorActionPreference = 'Continue'
Start-Sleep -Seconds 5
Unregister-ScheduledTask -TaskName 'golden-sysprep' -Confirm:$false
Remove-Item -LiteralPath $PSCommandPath -Force
Get-ChildItem -Path 'WSMan:\localhost\Listener' | Where-Object { $_.Keys -contains 'Transport=HTTPS' } | Remove-Item -Recurse -Force
Get-ChildItem -Path 'Cert:\LocalMachine\My' | Where-Object { $_.FriendlyName -eq 'golden-image WinRM' } | Remove-Item -Force
Remove-NetFirewallRule -Name 'golden-winrm-https'
Set-Item -Path 'WSMan:\localhost\Service\Auth\Basic' -Value $false
Get-ScheduledTask -TaskName 'packer-*' -ErrorAction SilentlyContinue | Unregister-ScheduledTask -Confirm:$false
Remove-Item -Path (Join-Path $env:WINDIR 'Temp\packer-*') -Force -ErrorAction SilentlyContinue
& (Join-Path $env:ProgramFiles 'Amazon\EC2Launch\EC2Launch.exe') sysprep --clean --shutdown
'@
$action = New-ScheduledTaskAction -Execute 'powershell.exe' -Argument "-NoProfile -NonInteractive -ExecutionPolicy Bypass -File `"$script`""
$principal = New-ScheduledTaskPrincipal -UserId 'SYSTEM' -LogonType ServiceAccount -RunLevel Highest
Register-ScheduledTask -TaskName 'golden-sysprep' -Action $action -Principal $principal -Force | Out-Null
Start-ScheduledTask -TaskName 'golden-sysprep'
[pscustomobject]@{ scheduled = $true; tool = 'EC2Launch v2'; version = $version; command = 'EC2Launch.exe sysprep --clean --shutdown' } |
    ConvertTo-Json -Compress
