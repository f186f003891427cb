# User data of every Windows builder and test instance (EC2Launch v2 runs it at first boot).
# It makes the instance reachable over WinRM/HTTPS (port 5986, Basic auth over TLS only) with a
# self-signed certificate made here, and prints that certificate to the console (COM1), which the
# worker reads through the EC2 API (GetConsoleOutput) and pins: the only certificate it trusts.
# It holds no secret: the Administrator password is EC2Launch's own random one, encrypted with
# the launch's key pair (GetPasswordData). Nothing of a family file is ever put into this script.
$ErrorActionPreference = 'Stop'

function Get-InstanceMetadata([string]$Path) {
    # IMDSv2 (the pipeline launches with HttpTokens=required)
    $headers = @{ 'X-aws-ec2-metadata-token-ttl-seconds' = '300' }
    $token = Invoke-RestMethod -Method Put -Uri 'http://169.254.169.254/latest/api/token' -Headers $headers
    try {
        Invoke-RestMethod -Uri "http://169.254.169.254/latest/meta-data/$Path" -Headers @{ 'X-aws-ec2-metadata-token' = $token }
    } catch {
        $null  # no public address: fine
    }
}

$addresses = @('127.0.0.1')  # SSM port forwarding reaches the listener as localhost
foreach ($name in 'local-ipv4', 'public-ipv4') {
    $address = Get-InstanceMetadata $name
    if ($address) { $addresses += $address }
}
$subjectNames = @('DNS=localhost', "DNS=$env:COMPUTERNAME") + @($addresses | ForEach-Object { "IPAddress=$_" })
$certificate = New-SelfSignedCertificate -CertStoreLocation 'Cert:\LocalMachine\My' `
    -Subject "CN=$env:COMPUTERNAME" -FriendlyName 'golden-image WinRM' `
    -KeyAlgorithm RSA -KeyLength 3072 -HashAlgorithm SHA256 -KeyExportPolicy NonExportable `
    -NotAfter (Get-Date).AddDays(3) `
    -TextExtension @("2.5.29.17={text}$($subjectNames -join '&')", '2.5.29.37={text}1.3.6.1.5.5.7.3.1')

Get-ChildItem -Path 'WSMan:\localhost\Listener' |
    Where-Object { $_.Keys -contains 'Transport=HTTPS' } |
    Remove-Item -Recurse -Force
New-Item -Path 'WSMan:\localhost\Listener' -Transport HTTPS -Address * `
    -CertificateThumbPrint $certificate.Thumbprint -Force | Out-Null
Set-Item -Path 'WSMan:\localhost\Service\Auth\Basic' -Value $true
Set-Item -Path 'WSMan:\localhost\Service\AllowUnencrypted' -Value $false
Set-Item -Path 'WSMan:\localhost\MaxTimeoutms' -Value 1800000
New-NetFirewallRule -Name 'golden-winrm-https' -DisplayName 'WinRM over HTTPS (golden-image pipeline)' `
    -Direction Inbound -Protocol TCP -LocalPort 5986 -Action Allow | Out-Null

$body = [Convert]::ToBase64String($certificate.RawData, 'InsertLineBreaks')
$console = New-Object System.IO.Ports.SerialPort 'COM1', 115200, 'None', 8, 'One'
$console.Open()
try {
    $console.WriteLine('-----BEGIN GOLDEN WINRM CERTIFICATE-----')
    foreach ($line in ($body -split "`r?`n")) { $console.WriteLine($line) }
    $console.WriteLine('-----END GOLDEN WINRM CERTIFICATE-----')
} finally {
    $console.Close()
}
