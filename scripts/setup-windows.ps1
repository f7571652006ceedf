<#
.SYNOPSIS
Prepare a Windows 11 PC (with or without an NVIDIA GPU) as a host of Morgan's fleet.

.DESCRIPTION
Morgan's containers run on Docker Engine inside a WSL2 distribution (Ubuntu 24.04) with
systemd and mirrored networking, set up by scripts/setup-linux.sh as any Linux host is:
the containers' host networking then listens on this PC's own addresses, the NVIDIA
driver of Windows serves CUDA inside WSL, and the deploy machine reaches Docker at
tcp://ADDRESS:2376 with TLS client certificates, as the stack file's Windows host (h2)
says. docs/operations/deployment.md explains why not Docker Desktop.

In order: Windows 11 22H2+ and an administrator shell; WSL2 (installed when missing);
mirrored networking in %USERPROFILE%\.wslconfig; the distribution; systemd in it; the
NVIDIA driver seen from WSL (nvidia-smi); setup-linux.sh inside it (Docker Engine, the
NVIDIA Container Toolkit, TLS on 2376, the deploy user, then `morgan host probe`); the
Windows and Hyper-V firewall rules for exactly the host's ports; a task that keeps the
distribution running from startup. Running it again changes only what is missing;
-WhatIf prints every step (and setup-linux.sh's, with --dry-run) and changes nothing.

.EXAMPLE
.\scripts\setup-windows.ps1 -Name h2 -Address 192.168.1.12 -AuthorizedKey .\morgan.pub `
    -DockerTls C:\morgan\tls -Ports (morgan plan --stack homelab --ports h2)

.EXAMPLE
.\scripts\setup-windows.ps1 -Name h2 -Address 192.168.1.12 -AuthorizedKey .\morgan.pub `
    -DockerTls C:\morgan\tls -Ports "2376/tcp 8002/tcp 8003/tcp" -WhatIf
#>
[CmdletBinding(SupportsShouldProcess)]
param(
    # The host's name in the stack file (hosts:), e.g. h2.
    [Parameter(Mandatory)][string]$Name,
    # The name or IP the other hosts and the deploy machine reach this PC at.
    [Parameter(Mandatory)][string]$Address,
    # The deploy user's public key (for the deploy user inside WSL).
    [Parameter(Mandatory)][string]$AuthorizedKey,
    # A folder with ca.pem, cert.pem and key.pem: dockerd's TLS identity on port 2376.
    [Parameter(Mandatory)][string]$DockerTls,
    # The ports to open to the fleet: `morgan plan --stack S --ports NAME`.
    [Parameter(Mandatory)][string]$Ports,
    # Who may reach them: Windows Firewall's LocalSubnet, or a CIDR such as 192.168.1.0/24.
    [string]$AllowFrom = 'LocalSubnet',
    [string]$Distribution = 'Ubuntu-24.04'
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
# The Hyper-V firewall's creator id of WSL's virtual machine.
$WslVmCreator = '{40E0AC32-46A5-438A-A0B2-2B479E8F2E90}'
$RuleName = 'Morgan fleet'
$TaskName = 'Morgan WSL'
$Here = Split-Path -Parent $MyInvocation.MyCommand.Path
$DryRun = [bool]$WhatIfPreference

function Write-Step([string]$Text) { Write-Host "setup-windows: $Text" }

function Stop-Setup([string]$Text) {
    Write-Host "setup-windows: $Text" -ForegroundColor Red
    exit 1
}

function ConvertTo-PortList([string]$Spec) {
    # "2376/tcp 8301/udp ..." -> @{ tcp = @(2376, ...); udp = @(8301, ...) }
    $list = @{ tcp = @(); udp = @() }
    foreach ($item in ($Spec -split '[\s,]+' | Where-Object { $_ })) {
        if ($item -notmatch '^(\d{1,5})/(tcp|udp)$' -or [int]$Matches[1] -lt 1 -or [int]$Matches[1] -gt 65535) {
            Stop-Setup "-Ports: '$item' is not PORT/tcp or PORT/udp (take the list from ``morgan plan --stack S --ports $Name``)"
        }
        $list[$Matches[2]] += [int]$Matches[1]
    }
    return $list
}

function ConvertTo-WslPath([string]$Path) {
    # C:\morgan\tls -> /mnt/c/morgan/tls
    $full = (Resolve-Path -LiteralPath $Path).Path
    $drive = $full.Substring(0, 1).ToLowerInvariant()
    return '/mnt/' + $drive + ($full.Substring(2) -replace '\\', '/')
}

function Invoke-Wsl([string[]]$Arguments) {
    & wsl.exe @Arguments
    if ($LASTEXITCODE -ne 0) { Stop-Setup "wsl $($Arguments -join ' ') failed (exit $LASTEXITCODE)" }
}

function Test-Wsl([string[]]$Arguments) {
    # A read-only question to WSL: true when the command inside it exits 0.
    & wsl.exe @Arguments *> $null
    return $LASTEXITCODE -eq 0
}

function Get-InDistribution([string[]]$Command) {
    # The arguments that run $Command as root inside the distribution.
    return @('--distribution', $Distribution, '--user', 'root', '--') + $Command
}

function Assert-Prerequisites {
    $principal = [Security.Principal.WindowsPrincipal][Security.Principal.WindowsIdentity]::GetCurrent()
    if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
        Stop-Setup 'run it from an administrator PowerShell (it installs WSL and adds firewall rules)'
    }
    $build = [int](Get-CimInstance Win32_OperatingSystem).BuildNumber
    if ($build -lt 22621) {
        Stop-Setup "Windows build ${build}: mirrored networking needs Windows 11 22H2 (build 22621) or later"
    }
    foreach ($file in @($AuthorizedKey, (Join-Path $DockerTls 'ca.pem'), (Join-Path $DockerTls 'cert.pem'),
                        (Join-Path $DockerTls 'key.pem'), (Join-Path $Here 'setup-linux.sh'))) {
        if (-not (Test-Path -LiteralPath $file)) { Stop-Setup "$file is missing" }
    }
}

function Install-Wsl {
    if (Test-Wsl @('--status')) {
        Write-Step 'WSL2 is installed; updating it'
        if ($PSCmdlet.ShouldProcess('WSL', 'wsl --update')) { Invoke-Wsl @('--update') }
        return
    }
    if ($PSCmdlet.ShouldProcess('WSL', 'wsl --install --no-distribution')) {
        Invoke-Wsl @('--install', '--no-distribution')
        Stop-Setup 'WSL2 was installed: restart Windows, then run this script again'
    }
}

function Set-MirroredNetworking {
    $path = Join-Path $env:USERPROFILE '.wslconfig'
    $text = if (Test-Path -LiteralPath $path) { Get-Content -LiteralPath $path -Raw } else { '' }
    if ($text -match '(?m)^\s*networkingMode\s*=\s*mirrored\s*$') {
        Write-Step "mirrored networking is on ($path)"
        return
    }
    if ($text -match '(?m)^\s*networkingMode\s*=') {
        $text = $text -replace '(?m)^\s*networkingMode\s*=.*$', 'networkingMode=mirrored'
    } elseif ($text -match '(?m)^\[wsl2\]\s*$') {
        $text = $text -replace '(?m)^\[wsl2\]\s*$', "[wsl2]`r`nnetworkingMode=mirrored"
    } else {
        $text = $text + "`r`n[wsl2]`r`nnetworkingMode=mirrored`r`n"
    }
    if ($PSCmdlet.ShouldProcess($path, 'set networkingMode=mirrored')) {
        Set-Content -LiteralPath $path -Value $text.TrimStart() -Encoding ascii
        Invoke-Wsl @('--shutdown')
    }
}

function Install-Distribution {
    $installed = (& wsl.exe --list --quiet) -replace "`0", '' | ForEach-Object { $_.Trim() }
    if ($installed -contains $Distribution) {
        Write-Step "$Distribution is installed"
        return
    }
    if ($PSCmdlet.ShouldProcess($Distribution, 'wsl --install --no-launch')) {
        Invoke-Wsl @('--install', '--distribution', $Distribution, '--no-launch')
        Invoke-Wsl (Get-InDistribution @('true'))
    }
}

function Enable-Systemd {
    if (Test-Wsl (Get-InDistribution @('grep', '-qx', 'systemd=true', '/etc/wsl.conf'))) {
        Write-Step "systemd is on in $Distribution"
        return
    }
    if ($PSCmdlet.ShouldProcess($Distribution, 'systemd=true in /etc/wsl.conf')) {
        Invoke-Wsl (Get-InDistribution @('sh', '-c', "printf '[boot]\nsystemd=true\n' > /etc/wsl.conf"))
        Invoke-Wsl @('--terminate', $Distribution)
    }
}

function Test-NvidiaFromWsl {
    if (-not (Get-Command nvidia-smi.exe -ErrorAction SilentlyContinue)) {
        Write-Step 'no NVIDIA driver on Windows: this host runs CPU services only'
        return
    }
    # The Windows driver is what CUDA inside WSL uses: never install a Linux driver there.
    if (-not (Test-Wsl (Get-InDistribution @('/usr/lib/wsl/lib/nvidia-smi', '-L')))) {
        Stop-Setup 'nvidia-smi works on Windows but not in WSL: update the NVIDIA driver and WSL (wsl --update)'
    }
}

function Invoke-SetupLinux {
    $stage = Join-Path $env:ProgramData 'Morgan\setup'
    if ($PSCmdlet.ShouldProcess($stage, 'copy setup-linux.sh, host_probe.py and the key')) {
        New-Item -ItemType Directory -Force -Path $stage | Out-Null
        Copy-Item -LiteralPath (Join-Path $Here 'setup-linux.sh') -Destination $stage -Force
        $probe = Join-Path $Here '..\services\morgan\host_probe.py'
        if (Test-Path -LiteralPath $probe) { Copy-Item -LiteralPath $probe -Destination $stage -Force }
        Copy-Item -LiteralPath $AuthorizedKey -Destination (Join-Path $stage 'authorized_key.pub') -Force
    } else {
        $stage = $Here
    }
    $arguments = Get-InDistribution @('bash', "$(ConvertTo-WslPath $stage)/setup-linux.sh",
        '--name', $Name, '--address', $Address,
        '--authorized-key', (ConvertTo-WslPath $AuthorizedKey),
        '--docker-tls', (ConvertTo-WslPath $DockerTls), '--ports', $Ports)
    if ($DryRun) { $arguments += '--dry-run' }
    # setup-linux.sh prints its own steps; with -WhatIf it only says what it would do.
    & wsl.exe @arguments
    if ($LASTEXITCODE -ne 0 -and -not $DryRun) {
        Stop-Setup "setup-linux.sh in $Distribution failed (exit $LASTEXITCODE); its last lines say why"
    }
}

function Open-Firewall {
    $list = ConvertTo-PortList $Ports
    foreach ($protocol in @('tcp', 'udp')) {
        $ports = $list[$protocol]
        if ($ports.Count -eq 0) { continue }
        $display = "$RuleName ($($protocol.ToUpperInvariant()))"
        $text = ($ports | Sort-Object) -join ','
        if ($PSCmdlet.ShouldProcess($display, "allow inbound $protocol $text from $AllowFrom")) {
            Get-NetFirewallRule -DisplayName $display -ErrorAction SilentlyContinue | Remove-NetFirewallRule
            $rule = @{
                DisplayName = $display; Direction = 'Inbound'; Action = 'Allow'
                Profile = @('Domain', 'Private'); Protocol = $protocol.ToUpperInvariant()
                LocalPort = $ports; RemoteAddress = $AllowFrom
            }
            New-NetFirewallRule @rule | Out-Null
            # Mirrored WSL traffic passes the Hyper-V firewall too.
            $hyperv = "MorganFleet$($protocol.ToUpperInvariant())"
            Get-NetFirewallHyperVRule -Name $hyperv -ErrorAction SilentlyContinue | Remove-NetFirewallHyperVRule
            $vmRule = @{
                Name = $hyperv; DisplayName = $display; Direction = 'Inbound'; Action = 'Allow'
                VMCreatorId = $WslVmCreator; Protocol = $protocol.ToUpperInvariant()
                LocalPorts = $ports; RemoteAddresses = $AllowFrom
            }
            New-NetFirewallHyperVRule @vmRule | Out-Null
        }
    }
}

function Register-KeepAlive {
    # WSL stops an idle distribution: one process from startup keeps dockerd serving.
    if (Get-ScheduledTask -TaskName $TaskName -ErrorAction SilentlyContinue) {
        Write-Step "scheduled task '$TaskName' keeps $Distribution running"
        return
    }
    if ($PSCmdlet.ShouldProcess($TaskName, 'register a startup task running the distribution')) {
        $task = @{
            TaskName = $TaskName
            Action = New-ScheduledTaskAction -Execute 'wsl.exe' -Argument ((Get-InDistribution @('sleep', 'infinity')) -join ' ')
            Trigger = New-ScheduledTaskTrigger -AtStartup
            Principal = New-ScheduledTaskPrincipal -UserId $env:USERNAME -LogonType S4U -RunLevel Highest
            Settings = New-ScheduledTaskSettingsSet -ExecutionTimeLimit ([TimeSpan]::Zero) -AllowStartIfOnBatteries
        }
        Register-ScheduledTask @task | Out-Null
        Start-ScheduledTask -TaskName $TaskName
    }
}

$Steps = @(
    @{ Name = 'Windows 11 22H2+, administrator, the files it needs'; Run = { Assert-Prerequisites } },
    @{ Name = 'WSL2'; Run = { Install-Wsl } },
    @{ Name = 'mirrored networking'; Run = { Set-MirroredNetworking } },
    @{ Name = "the $Distribution distribution"; Run = { Install-Distribution } },
    @{ Name = 'systemd in the distribution'; Run = { Enable-Systemd } },
    @{ Name = 'the NVIDIA driver seen from WSL'; Run = { Test-NvidiaFromWsl } },
    @{ Name = 'Docker Engine, TLS on 2376 and the deploy user (setup-linux.sh)'; Run = { Invoke-SetupLinux } },
    @{ Name = 'Windows and Hyper-V firewall rules'; Run = { Open-Firewall } },
    @{ Name = 'a startup task that keeps the distribution running'; Run = { Register-KeepAlive } }
)

$null = ConvertTo-PortList $Ports
$index = 0
foreach ($step in $Steps) {
    $index++
    Write-Step "[$index/$($Steps.Count)] $($step.Name)"
    & $step.Run
}
Write-Step "done: the stack file's entry is the probe's above (docker: tcp://${Address}:2376 with docker_tls)"
