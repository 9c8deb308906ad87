package postgres

import "github.com/livedump/livedump/controller/store/sqlstore"

// The statements shared with SQLite (package sqlstore), numbered for
// PostgreSQL once at start-up. The statements only PostgreSQL words this
// way stay next to the methods that run them.
var (
	createAgentSQL       = sqlstore.Rebind(sqlstore.CreateAgent)
	getAgentSQL          = sqlstore.Rebind(sqlstore.GetAgent)
	updateInventorySQL   = sqlstore.Rebind(sqlstore.UpdateInventory)
	touchAgentSQL        = sqlstore.Rebind(sqlstore.TouchAgent)
	setLabelsSQL         = sqlstore.Rebind(sqlstore.SetLabels + ` RETURNING ` + sqlstore.AgentColumns)
	setCertificateSQL    = sqlstore.Rebind(sqlstore.SetCertificate)
	setProvisionStateSQL = sqlstore.Rebind(sqlstore.SetProvisionState)
	setAgentMemorySQL    = sqlstore.Rebind(sqlstore.SetAgentMemory)
	agentMemorySQL       = sqlstore.Rebind(sqlstore.AgentMemory)

	createTokenSQL = sqlstore.Rebind(sqlstore.CreateToken)
	// lockTokenSQL reads a token and locks its row until the transaction
	// ends.
	lockTokenSQL = sqlstore.Rebind(sqlstore.GetToken + ` FOR UPDATE`)

	createCaptureSQL       = sqlstore.Rebind(sqlstore.CreateCapture)
	getCaptureSQL          = sqlstore.Rebind(sqlstore.GetCapture)
	listCapturesInStateSQL = sqlstore.Rebind(sqlstore.ListCapturesInState)
	setCaptureStateSQL     = sqlstore.Rebind(sqlstore.SetCaptureState)
	listTargetsSQL         = sqlstore.Rebind(sqlstore.ListTargets)
	getTargetSQL           = sqlstore.Rebind(sqlstore.GetTarget)
	targetExistsSQL        = sqlstore.Rebind(sqlstore.TargetExists)
	setTargetStateSQL      = sqlstore.Rebind(sqlstore.SetTargetState)
	countClaimedTargetsSQL = sqlstore.Rebind(sqlstore.CountClaimedTargets)
	listEventsSQL          = sqlstore.Rebind(sqlstore.ListEvents)
	eventSeqSQL            = sqlstore.Rebind(sqlstore.EventSeq)
	eventSignatureSQL      = sqlstore.Rebind(sqlstore.EventSignature)

	putDumpSQL          = sqlstore.Rebind(sqlstore.PutDump)
	getDumpSQL          = sqlstore.Rebind(sqlstore.GetDump)
	listCaptureDumpsSQL = sqlstore.Rebind(sqlstore.ListCaptureDumps)
	setDumpProgressSQL  = sqlstore.Rebind(sqlstore.SetDumpProgress)
	countDumpsSQL       = sqlstore.Rebind(sqlstore.CountDumps)
	dumpBytesSQL        = sqlstore.Rebind(sqlstore.DumpBytes)
	agentDumpBytesSQL   = sqlstore.Rebind(sqlstore.AgentDumpBytes)
	staleDumpUploadsSQL = sqlstore.Rebind(sqlstore.StaleDumpUploads)
	expireDumpUploadSQL = sqlstore.Rebind(sqlstore.ExpireDumpUpload)

	putArtifactSQL    = sqlstore.Rebind(sqlstore.PutArtifact)
	getArtifactSQL    = sqlstore.Rebind(sqlstore.GetArtifact)
	latestArtifactSQL = sqlstore.Rebind(sqlstore.LatestArtifact)

	appendAuditSQL = sqlstore.Rebind(sqlstore.AppendAudit)

	heartbeatReplicaSQL       = sqlstore.Rebind(sqlstore.HeartbeatReplica)
	setPresenceSQL            = sqlstore.Rebind(sqlstore.SetPresence)
	clearPresenceSQL          = sqlstore.Rebind(sqlstore.ClearPresence)
	presenceSQL               = sqlstore.Rebind(sqlstore.Presence)
	enqueueDirectiveSQL       = sqlstore.Rebind(sqlstore.EnqueueDirective)
	pendingDirectivesSQL      = sqlstore.Rebind(sqlstore.PendingDirectives)
	setDirectiveStateSQL      = sqlstore.Rebind(sqlstore.SetDirectiveState)
	getDirectiveSQL           = sqlstore.Rebind(sqlstore.GetDirective)
	deleteDirectivesBeforeSQL = sqlstore.Rebind(sqlstore.DeleteDirectivesBefore)

	recordOperatorCertSQL      = sqlstore.Rebind(sqlstore.RecordOperatorCert)
	listOperatorCertsSQL       = sqlstore.Rebind(sqlstore.ListOperatorCerts)
	revokeOperatorCertSQL      = sqlstore.Rebind(sqlstore.RevokeOperatorCert)
	revokeOperatorNameSQL      = sqlstore.Rebind(sqlstore.RevokeOperatorName)
	markOperatorNameRevokedSQL = sqlstore.Rebind(sqlstore.MarkOperatorNameRevoked)
	operatorCertRevocationSQL  = sqlstore.Rebind(sqlstore.OperatorCertRevocation)
)
