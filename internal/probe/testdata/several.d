/*
 * livedump capture several: rendered from the capture spec; do not edit.
 * processes: ms-teams.exe, SearchIndexer.exe, Code - Insiders.exe, SearchIndexer.old
 * statuses: 0xC000000D, 0xC0000022, 0x80000005, 0x00000103
 */
#pragma D option quiet
#pragma D option destructive

int livedump_hits;

syscall::NtCreateFile:return,
syscall::NtOpenFile:return,
syscall::NtDeviceIoControlFile:return
/(tolower(execname) == "ms-teams.exe" || tolower(execname) == "searchindexer." || tolower(execname) == "code - insider") && ((uint32_t)arg0 == 0xC000000D || (uint32_t)arg0 == 0xC0000022 || (uint32_t)arg0 == 0x80000005 || (uint32_t)arg0 == 0x00000103) && livedump_hits < 3/
{
	livedump_hits++;
	printf("@@livedump begin %d %d %d %d %s:%s 0x%08x %s\n", livedump_hits, walltimestamp, pid, tid, probefunc, probename, (uint32_t)arg0, execname);
	printf("@@livedump ustack");
	ustack(100);
	printf("\n@@livedump kstack");
	stack();
	printf("\n@@livedump end %d\n", livedump_hits);
	lkd(5);
}

syscall::NtCreateFile:return,
syscall::NtOpenFile:return,
syscall::NtDeviceIoControlFile:return
/livedump_hits >= 3/
{
	exit(0);
}
