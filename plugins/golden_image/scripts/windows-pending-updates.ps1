# The patch check's fallback on Windows: which software updates Windows Update offers that are
# not installed, through the Windows Update Agent API (what the bake's update rounds install).
# One JSON document: a list of {kb, title, classification, severity, security}. Read only.
$ErrorActionPreference = 'Stop'
$searcher = (New-Object -ComObject 'Microsoft.Update.Session').CreateUpdateSearcher()
$result = $searcher.Search("IsInstalled=0 and Type='Software' and IsHidden=0")
$updates = foreach ($update in $result.Updates) {
    $classification = @($update.Categories | Where-Object { $_.Type -eq 'UpdateClassification' } | ForEach-Object { $_.Name }) -join ', '
    [pscustomobject]@{
        kb = @($update.KBArticleIDs | ForEach-Object { "KB$_" }) -join ','
        title = [string]$update.Title
        classification = $classification
        severity = [string]$update.MsrcSeverity
        security = [bool]($update.MsrcSeverity -or $classification -match 'Security Updates|Critical Updates')
    }
}
ConvertTo-Json -InputObject @($updates) -Depth 3 -Compress
