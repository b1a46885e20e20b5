; Inno Setup 6 script for Mixtral Desk (Windows x64). packaging/build.py runs it when iscc is on
; PATH, after PyInstaller made dist\mixtral-desk\; by hand:
;   iscc /DAppVersion=0.1.0 /DDistDir=C:\path\to\dist /OC:\path\to\dist packaging\windows\mixtral-desk.iss
; The result, mixtral-desk-<version>-setup.exe, installs per user (no administrator rights), adds
; a Start-menu entry (optionally a desktop icon) and an uninstaller. The user's conversations and
; models (in %LOCALAPPDATA%\mixtral-desk) are kept on uninstall.

#ifndef AppVersion
  #define AppVersion "0.1.0"
#endif
#ifndef DistDir
  #define DistDir "..\..\dist"
#endif

[Setup]
AppId={{7C1E2A4B-93D5-4F0E-9B7A-6D2C8E1F5A30}
AppName=Mixtral Desk
AppVersion={#AppVersion}
AppVerName=Mixtral Desk {#AppVersion}
AppPublisher=The Mixtral Desk authors
DefaultDirName={autopf}\Mixtral Desk
DefaultGroupName=Mixtral Desk
DisableProgramGroupPage=yes
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputBaseFilename=mixtral-desk-{#AppVersion}-setup
SetupIconFile=..\icons\mixtral-desk.ico
UninstallDisplayIcon={app}\mixtral-desk.exe
LicenseFile=..\licenses\mixtral-desk-MIT.txt
Compression=lzma2/max
SolidCompression=yes
WizardStyle=modern
; Close a running Mixtral Desk before files are replaced.
CloseApplications=yes

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[Files]
Source: "{#DistDir}\mixtral-desk\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{group}\Mixtral Desk"; Filename: "{app}\mixtral-desk.exe"
Name: "{group}\Mixtral Desk self-test"; Filename: "{cmd}"; Parameters: "/k ""{app}\mixtral-desk-cli.exe"" --self-test"
Name: "{group}\{cm:UninstallProgram,Mixtral Desk}"; Filename: "{uninstallexe}"
Name: "{autodesktop}\Mixtral Desk"; Filename: "{app}\mixtral-desk.exe"; Tasks: desktopicon

[Run]
Filename: "{app}\mixtral-desk.exe"; Description: "{cm:LaunchProgram,Mixtral Desk}"; Flags: nowait postinstall skipifsilent
