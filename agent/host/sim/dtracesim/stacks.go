package dtracesim

import "fmt"

// variant is one call path of a syscall: a stack signature. Each syscall
// has two to four, so that bucketing events by stack has something to
// group; the frames of a variant are fixed (for a given process), as a
// real call path's are.
type variant struct {
	api  []string // user frames between the ntdll stub and the application
	app  int      // application frames
	raw  int      // application frames without symbols (JIT code, stripped modules)
	kern []string // kernel frames, innermost first, down to the service itself
}

// variants are the call paths of the busiest syscalls, from what these
// stacks look like on Windows 11.
var variants = map[string][]variant{
	"NtCreateFile": {
		{
			api: []string{"KERNELBASE`CreateFileInternal+0x590", "KERNELBASE`CreateFileW+0x66"},
			app: 3,
			kern: []string{"Ntfs.sys`NtfsCommonCreate+0x43d", "Ntfs.sys`NtfsFsdCreate+0x1dd", "nt`IofCallDriver+0x55",
				"FLTMGR.SYS`FltpLegacyProcessingAfterPreCallbacksCompleted+0x15e", "FLTMGR.SYS`FltpCreate+0x310",
				"nt`IofCallDriver+0x55", "nt`IopParseDevice+0x8c2", "nt`ObpLookupObjectName+0x719",
				"nt`ObOpenObjectByNameEx+0x1df", "nt`IopCreateFile+0x84c", "nt`NtCreateFile+0x79"},
		},
		{
			api: []string{"KERNELBASE`CreateFileInternal+0x590", "KERNELBASE`CreateFileW+0x66", "KERNELBASE`CreateFileA+0x2e"},
			app: 2, raw: 1,
			kern: []string{"FLTMGR.SYS`FltpPerformPreCallbacksWorker+0x36e", "FLTMGR.SYS`FltpPassThroughInternal+0xca",
				"FLTMGR.SYS`FltpCreate+0x310", "nt`IofCallDriver+0x55", "nt`IopParseDevice+0x8c2",
				"nt`ObpLookupObjectName+0x719", "nt`ObOpenObjectByNameEx+0x1df", "nt`IopCreateFile+0x84c",
				"nt`NtCreateFile+0x79"},
		},
		{
			api: []string{"KERNELBASE`CreateFileInternal+0x590", "KERNELBASE`CreateFileW+0x66", "ucrtbase`_wsopen_nolock+0x1b3", "ucrtbase`_wsopen_s+0x5e"},
			app: 2, raw: 2,
			kern: []string{"nt`ObpLookupObjectName+0x3fe", "nt`ObOpenObjectByNameEx+0x1df", "nt`IopCreateFile+0x84c",
				"nt`NtCreateFile+0x79"},
		},
		{
			api: []string{"KERNELBASE`CreateFileInternal+0x590", "KERNELBASE`CreateFile2+0x104"},
			app: 3,
			kern: []string{"nt`IoCheckShareAccessEx+0x8f", "Ntfs.sys`NtfsCheckShareAccess+0x61",
				"Ntfs.sys`NtfsOpenAttributeInExistingFile+0x2a7", "Ntfs.sys`NtfsOpenExistingPrefixFcb+0x2ad",
				"Ntfs.sys`NtfsCommonCreate+0x1b1", "Ntfs.sys`NtfsFsdCreate+0x1dd", "nt`IofCallDriver+0x55",
				"FLTMGR.SYS`FltpCreate+0x310", "nt`IofCallDriver+0x55", "nt`IopParseDevice+0x8c2",
				"nt`ObpLookupObjectName+0x719", "nt`ObOpenObjectByNameEx+0x1df", "nt`IopCreateFile+0x84c",
				"nt`NtCreateFile+0x79"},
		},
	},
	"NtOpenFile": {
		{
			api: []string{"KERNELBASE`FindFirstFileExW+0x3c1", "KERNELBASE`FindFirstFileW+0x1e"},
			app: 3,
			kern: []string{"Ntfs.sys`NtfsCommonCreate+0x43d", "Ntfs.sys`NtfsFsdCreate+0x1dd", "nt`IofCallDriver+0x55",
				"FLTMGR.SYS`FltpCreate+0x310", "nt`IofCallDriver+0x55", "nt`IopParseDevice+0x8c2",
				"nt`ObpLookupObjectName+0x719", "nt`ObOpenObjectByNameEx+0x1df", "nt`IopCreateFile+0x84c",
				"nt`NtOpenFile+0x58"},
		},
		{
			api: []string{"ntdll`LdrpMapDllNtFileName+0x158", "ntdll`LdrpMapDllFullPath+0xe3", "ntdll`LdrpProcessWork+0x74",
				"ntdll`LdrpLoadDllInternal+0x13e", "ntdll`LdrpLoadDll+0xa8", "ntdll`LdrLoadDll+0xe6",
				"KERNELBASE`LoadLibraryExW+0x161"},
			app: 2,
			kern: []string{"nt`ObpLookupObjectName+0x3fe", "nt`ObOpenObjectByNameEx+0x1df", "nt`IopCreateFile+0x84c",
				"nt`NtOpenFile+0x58"},
		},
		{
			api: []string{"KERNELBASE`DeleteFileW+0x1f9"},
			app: 2, raw: 1,
			kern: []string{"FLTMGR.SYS`FltpPerformPreCallbacksWorker+0x36e", "FLTMGR.SYS`FltpPassThroughInternal+0xca",
				"FLTMGR.SYS`FltpCreate+0x310", "nt`IofCallDriver+0x55", "nt`IopParseDevice+0x8c2",
				"nt`ObpLookupObjectName+0x719", "nt`ObOpenObjectByNameEx+0x1df", "nt`IopCreateFile+0x84c",
				"nt`NtOpenFile+0x58"},
		},
	},
	"NtQueryInformationFile": {
		{
			api: []string{"KERNELBASE`GetFileInformationByHandle+0x8b"},
			app: 3,
			kern: []string{"Ntfs.sys`NtfsCommonQueryInformation+0x2c4", "Ntfs.sys`NtfsFsdDispatchSwitch+0xe5",
				"Ntfs.sys`NtfsFsdDispatchWait+0x47", "nt`IofCallDriver+0x55", "FLTMGR.SYS`FltpDispatch+0xd6",
				"nt`IofCallDriver+0x55", "nt`NtQueryInformationFile+0x4a2"},
		},
		{
			api: []string{"KERNELBASE`GetFileSizeEx+0x2c"},
			app: 2, raw: 1,
			kern: []string{"nt`IopQueryInformationFileFast+0x61", "nt`NtQueryInformationFile+0x2b8"},
		},
		{
			api: []string{"KERNELBASE`GetFileInformationByHandleEx+0xc8"},
			app: 3,
			kern: []string{"FLTMGR.SYS`FltpPerformPreCallbacksWorker+0x36e", "FLTMGR.SYS`FltpPassThroughInternal+0xca",
				"FLTMGR.SYS`FltpDispatch+0xb8", "nt`IofCallDriver+0x55", "nt`NtQueryInformationFile+0x4a2"},
		},
	},
	"NtDeviceIoControlFile": {
		{
			api: []string{"KERNELBASE`DeviceIoControl+0x82", "KERNEL32`DeviceIoControlImplementation+0x75"},
			app: 3,
			kern: []string{"nt`IofCallDriver+0x55", "nt`IopSynchronousServiceTail+0x1a8", "nt`IopXxxControlFile+0x5e5",
				"nt`NtDeviceIoControlFile+0x56"},
		},
		{
			api: []string{"mswsock`WSPRecv+0x2c4", "WS2_32`WSARecv+0x16e"},
			app: 2, raw: 2,
			kern: []string{"afd.sys`AfdFastIoDeviceControl+0xf9c", "nt`IopXxxControlFile+0x2d8", "nt`NtDeviceIoControlFile+0x56"},
		},
		{
			api: []string{"nsi`NsiGetAllParametersEx+0x14f", "IPHLPAPI`GetAdaptersAddresses+0x1b5"},
			app: 2,
			kern: []string{"nsiproxy.sys`NsippDispatch+0x6a", "nt`IofCallDriver+0x55", "nt`IopSynchronousServiceTail+0x1a8",
				"nt`IopXxxControlFile+0x5e5", "nt`NtDeviceIoControlFile+0x56"},
		},
	},
	"NtAlpcSendWaitReceivePort": {
		{
			api: []string{"RPCRT4`LRPC_CASSOCIATION::AlpcSendWaitReceivePort+0x5d", "RPCRT4`LRPC_BASE_CCALL::DoSendReceive+0x10f",
				"RPCRT4`LRPC_BASE_CCALL::SendReceive+0x53", "RPCRT4`NdrpClientCall3+0x90c", "RPCRT4`NdrClientCall3+0xeb"},
			app: 2,
			kern: []string{"nt`AlpcpReceiveSynchronousReply+0x53", "nt`AlpcpProcessSynchronousRequest+0x33d",
				"nt`NtAlpcSendWaitReceivePort+0x1fd"},
		},
		{
			api: []string{"RPCRT4`LRPC_CASSOCIATION::AlpcSendWaitReceivePort+0x5d", "RPCRT4`LRPC_BASE_CCALL::DoSendReceive+0x10f",
				"RPCRT4`LRPC_BASE_CCALL::SendReceive+0x53", "RPCRT4`I_RpcSendReceive+0x6f", "combase`ThreadSendReceive+0x3e",
				"combase`CSyncClientCall::SwitchAptAndDispatchCall+0x63", "combase`CSyncClientCall::SendReceive2+0x2f3",
				"combase`ObjectMethodExceptionHandlingAction<<lambda_c9f3956a20c9da92a64affc24fdd69ec> >+0x1d"},
			app: 2, raw: 1,
			kern: []string{"nt`AlpcpSignalAndWait+0x8d", "nt`AlpcpReceiveSynchronousReply+0x53",
				"nt`AlpcpProcessSynchronousRequest+0x33d", "nt`NtAlpcSendWaitReceivePort+0x1fd"},
		},
	},
}

// appFunctions name the application frames of the simulated processes.
var appFunctions = []string{
	"CFileCache::Open", "ConfigStore::Load", "CacheManager::Flush", "TelemetryClient::Upload",
	"SettingsProvider::Read", "LogWriter::Rotate", "DeviceWatcher::Poll", "IpcChannel::Send",
	"UpdateChecker::Run", "PluginHost::LoadPlugin", "SessionManager::Restore", "TaskQueue::Dispatch",
	"WorkerThread::Run", "ProfileStore::Sync", "MediaPipeline::Start",
}

// genericKernel are driver-independent inner frames for syscalls without
// a table entry.
var genericKernel = [][]string{
	nil,
	{"nt`ObReferenceObjectByHandleWithTag+0x1de"},
	{"nt`SeAccessCheckWithHint+0x6a5", "nt`ObpCreateHandle+0x2d7"},
	{"nt`ProbeForWrite+0x55"},
}

// stackVariants are the call paths of fn: from the table, or two to four
// generic ones derived from its name.
func stackVariants(fn string) []variant {
	if v, ok := variants[fn]; ok {
		return v
	}
	n := 2 + int(hash64Uint(hash64("variants", fn), 6)%3)
	out := make([]variant, n)
	for i := range out {
		h := hash64Uint(hash64("generic", fn, fmt.Sprint(i)), 3)
		out[i] = variant{app: 2 + int(h%3), raw: int(h>>8) % 2}
		out[i].kern = append(append([]string{}, genericKernel[i]...), fmt.Sprintf("nt`%s+0x%x", fn, 0x20+(h>>16)%0x300))
	}
	return out
}

// userStack is the user stack of the firing, innermost first.
func userStack(f *firing) []string {
	if f.probe.prov != "syscall" {
		return nil // BEGIN and END run in dtrace.exe's consumer, not in user code
	}
	v := stackVariants(f.probe.fn)[f.sig]
	frames := []string{fmt.Sprintf("ntdll`%s+0x14", f.probe.fn)}
	frames = append(frames, v.api...)
	sig := fmt.Sprint(f.sig)
	for i := 0; i < v.app; i++ {
		h := hash64Uint(hash64("app", f.proc.module, f.probe.fn, sig, fmt.Sprint(i)), 1)
		frames = append(frames, fmt.Sprintf("%s`%s+0x%x", f.proc.module, appFunctions[h%uint64(len(appFunctions))], 0x1a+(h>>20)%0x5f0))
		if i == 0 {
			for j := 0; j < v.raw; j++ {
				h := hash64Uint(hash64("raw", f.proc.module, f.probe.fn, sig, fmt.Sprint(j)), 2)
				frames = append(frames, fmt.Sprintf("0x%x", f.proc.base+0x1000+h%0x3f0000))
			}
		}
	}
	return append(frames, "KERNEL32`BaseThreadInitThunk+0x1d", "ntdll`RtlUserThreadStart+0x28")
}

// kernelStack is the kernel stack of the firing, innermost first.
func kernelStack(f *firing) []string {
	if f.probe.prov != "syscall" {
		return []string{"dtrace.sys`dtrace_ioctl+0x3a5", "nt`IofCallDriver+0x55", "nt`IopXxxControlFile+0x5e5",
			"nt`NtDeviceIoControlFile+0x56", "nt`KiSystemServiceCopyEnd+0x25"}
	}
	v := stackVariants(f.probe.fn)[f.sig]
	return append(append([]string{}, v.kern...), "nt`KiSystemServiceCopyEnd+0x25")
}
