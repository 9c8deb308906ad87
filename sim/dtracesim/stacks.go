package dtracesim

import (
	"fmt"
	"strconv"
)

// variant is one call path of a syscall: a stack signature. Each syscall
// has two to four, so that bucketing events by stack has something to
// group; the frames of a variant are fixed (for a given process), as a
// real call path's are. What dtrace prints of them is often less (see
// realism.go).
type variant struct {
	api []string // user frames between the ntdll stub and the application
	app int      // application frames
	raw int      // application frames without symbols (JIT code, stripped modules)
}

// variants are the call paths of the busiest syscalls, from what these
// stacks look like on Windows 11.
var variants = map[string][]variant{
	"NtCreateFile": {
		{
			api: []string{"KERNELBASE`CreateFileInternal+0x590", "KERNELBASE`CreateFileW+0x66"},
			app: 3,
		},
		{
			api: []string{"KERNELBASE`CreateFileInternal+0x590", "KERNELBASE`CreateFileW+0x66", "KERNELBASE`CreateFileA+0x2e"},
			app: 2, raw: 1,
		},
		{
			api: []string{"KERNELBASE`CreateFileInternal+0x590", "KERNELBASE`CreateFileW+0x66", "ucrtbase`_wsopen_nolock+0x1b3", "ucrtbase`_wsopen_s+0x5e"},
			app: 2, raw: 2,
		},
		{
			api: []string{"KERNELBASE`CreateFileInternal+0x590", "KERNELBASE`CreateFile2+0x104"},
			app: 3,
		},
	},
	"NtOpenFile": {
		{
			api: []string{"KERNELBASE`FindFirstFileExW+0x3c1", "KERNELBASE`FindFirstFileW+0x1e"},
			app: 3,
		},
		{
			api: []string{"ntdll`LdrpMapDllNtFileName+0x158", "ntdll`LdrpMapDllFullPath+0xe3", "ntdll`LdrpProcessWork+0x74",
				"ntdll`LdrpLoadDllInternal+0x13e", "ntdll`LdrpLoadDll+0xa8", "ntdll`LdrLoadDll+0xe6",
				"KERNELBASE`LoadLibraryExW+0x161"},
			app: 2,
		},
		{
			api: []string{"KERNELBASE`DeleteFileW+0x1f9"},
			app: 2, raw: 1,
		},
	},
	"NtQueryInformationFile": {
		{
			api: []string{"KERNELBASE`GetFileInformationByHandle+0x8b"},
			app: 3,
		},
		{
			api: []string{"KERNELBASE`GetFileSizeEx+0x2c"},
			app: 2, raw: 1,
		},
		{
			api: []string{"KERNELBASE`GetFileInformationByHandleEx+0xc8"},
			app: 3,
		},
	},
	"NtDeviceIoControlFile": {
		{
			api: []string{"KERNELBASE`DeviceIoControl+0x82", "KERNEL32`DeviceIoControlImplementation+0x75"},
			app: 3,
		},
		{
			api: []string{"mswsock`WSPRecv+0x2c4", "WS2_32`WSARecv+0x16e"},
			app: 2, raw: 2,
		},
		{
			api: []string{"nsi`NsiGetAllParametersEx+0x14f", "IPHLPAPI`GetAdaptersAddresses+0x1b5"},
			app: 2,
		},
	},
	"NtAlpcSendWaitReceivePort": {
		{
			api: []string{"RPCRT4`LRPC_CASSOCIATION::AlpcSendWaitReceivePort+0x5d", "RPCRT4`LRPC_BASE_CCALL::DoSendReceive+0x10f",
				"RPCRT4`LRPC_BASE_CCALL::SendReceive+0x53", "RPCRT4`NdrpClientCall3+0x90c", "RPCRT4`NdrClientCall3+0xeb"},
			app: 2,
		},
		{
			api: []string{"RPCRT4`LRPC_CASSOCIATION::AlpcSendWaitReceivePort+0x5d", "RPCRT4`LRPC_BASE_CCALL::DoSendReceive+0x10f",
				"RPCRT4`LRPC_BASE_CCALL::SendReceive+0x53", "RPCRT4`I_RpcSendReceive+0x6f", "combase`ThreadSendReceive+0x3e",
				"combase`CSyncClientCall::SwitchAptAndDispatchCall+0x63", "combase`CSyncClientCall::SendReceive2+0x2f3",
				"combase`ObjectMethodExceptionHandlingAction<<lambda_c9f3956a20c9da92a64affc24fdd69ec> >+0x1d"},
			app: 2, raw: 1,
		},
	},
}

// appFunctions name the application frames of the simulated processes;
// one is not ASCII, so that symbol names reach dtrace's output in the ANSI
// code page now and then.
var appFunctions = []string{
	"CFileCache::Open", "ConfigStore::Load", "CacheManager::Flush", "TelemetryClient::Upload",
	"SettingsProvider::Read", "LogWriter::Rotate", "DeviceWatcher::Poll", "IpcChannel::Send",
	"UpdateChecker::Run", "PluginHost::LoadPlugin", "SessionManager::Restore", "TaskQueue::Dispatch",
	"WorkerThread::Run", "ProfileStore::Sync", "MediaPipeline::Start", "Dokument::GrößeBerechnen",
}

// hookFrames are the user frames of third-party modules that hook ntdll
// (security and data-loss-prevention products); their names are not ASCII.
// About a quarter of the call paths of a process pass through one.
var hookFrames = []string{"SécuritéAgent`Intercepteur::AvantAppel+0x3c", "ÜberwachungsDienst`HookNtCall+0x112"}

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
	}
	return out
}

// fullUserStack is the user stack of the firing's call path, innermost
// first, with every symbol dtrace could know; names are UTF-8 here.
func fullUserStack(f *firing) []string {
	v := stackVariants(f.probe.fn)[f.sig]
	frames := []string{fmt.Sprintf("ntdll`%s+0x14", f.probe.fn)}
	sig := fmt.Sprint(f.sig)
	if h := hash64("hook", f.proc.module, f.probe.fn, sig); h%4 == 0 {
		frames = append(frames, hookFrames[(h>>8)%uint64(len(hookFrames))])
	}
	frames = append(frames, v.api...)
	for i := 0; i < v.app; i++ {
		h := hash64Uint(hash64("app", f.proc.module, f.probe.fn, sig, fmt.Sprint(i)), 1)
		frames = append(frames, fmt.Sprintf("%s`%s+0x%x", f.proc.module, appFunctions[h%uint64(len(appFunctions))], 0x1a+(h>>20)%0x5f0))
		if i == 0 {
			for j := 0; j < v.raw; j++ {
				h := hash64Uint(hash64("raw", f.proc.module, f.probe.fn, sig, fmt.Sprint(j)), 2)
				addr := f.proc.base + 0x1000 + h%0x3f0000
				if j%2 == 0 {
					// JIT code: no module at that address.
					frames = append(frames, fmt.Sprintf("0x%x", 0x1f000000000|h&0xffffffff))
				} else {
					// A module without symbols (stripped, or no PDB).
					frames = append(frames, fmt.Sprintf("%s`0x%x", f.proc.module, addr))
				}
			}
		}
	}
	return append(frames, "KERNEL32`BaseThreadInitThunk+0x1d", "ntdll`RtlUserThreadStart+0x28")
}

// userStack is the user stack dtrace prints for the firing, innermost
// first: the call path made as poor as the firing's ustackKind, names in
// the ANSI code page when the realism says so.
func (w *world) userStack(f *firing) []string {
	if f.probe.prov != "syscall" {
		return []string{} // BEGIN and END run in dtrace.exe's consumer, not in user code
	}
	frames := poorer(f.ustack, strconv.FormatInt(w.boot.UnixNano(), 10), f.proc, fullUserStack(f))
	for i, fr := range frames {
		frames[i] = w.real.text(fr)
	}
	return frames
}

// dispatcherFrames is the kernel stack at a syscall probe: the system
// service dispatcher only. The probe fires before the service is called
// (entry) or after it returned (return), so none of its callees is on the
// stack.
var dispatcherFrames = []string{"nt`KiSystemServiceCopyEnd+0x25"}

// kernelStack is the kernel stack of the firing, innermost first.
func kernelStack(f *firing) []string {
	if f.probe.prov != "syscall" {
		return []string{"dtrace.sys`dtrace_ioctl+0x3a5", "nt`IofCallDriver+0x55", "nt`IopXxxControlFile+0x5e5",
			"nt`NtDeviceIoControlFile+0x56", "nt`KiSystemServiceCopyEnd+0x25"}
	}
	return append([]string{}, dispatcherFrames...)
}
