# The patch check's fallback on Windows: which software updates Windows Update offers that are
# not installed, through the Windows Update Agent API (what the bake's update rounds install).
# One JSON document: a list of {kb, title, classification, severity, security}. Read only.
# Not counted: Defender's definition updates and optional (BrowseOnly) updates.
$ErrorActionPreference = 'Stop'
$searcher = (New-Object -ComObject 'Microsoft.Update.Session').CreateUpdateSearcher()
$result = $searcher.Search("IsInstalled=0 and Type='Software' and IsHidden=0")
$definitions = 'e0789628-ce08-4437-be74-2495b842f43b'  # Defender's definitions: several a day, self-updated
$updates = foreach ($update in $result.Updates) {
    if ($update.BrowseOnly -or @($update.Categories | Where-Object { $_.CategoryID -eq $definitions }).Count -gt 0) {
        continue
    }
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
