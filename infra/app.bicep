// Every resource of the insights API, in one resource group (called from main.bicep).
//
// Two storage accounts, both with shared keys off:
// - the app's own (st<token>): the deployment package and the Functions host's state
//   (AzureWebJobsStorage: the purge timer's schedule and lock). Nothing in it outlives a redeploy,
//   so it is LRS.
// - the insights data (stdata<token>): the table the API reads and the ingestion API writes.
//   Separate so its redundancy (insightsStorageSku), its lifetime and its role assignments are its
//   own: the deploying user gets data rights on the insights table and nothing on the app's
//   package or host state, and host traffic never counts against the data's request limits.

param location string
param tags object
param resourceToken string
param principalId string
param principalType string
param instanceMemoryMB int
param maximumInstanceCount int
param httpPerInstanceConcurrency int
param alwaysReadyInstances int
param alertEmail string
param insightsStorageSku string
param insightsTableName string
@description('The AUTH_* app settings, by name.')
param auth object
param purgeSchedule string

// Built-in role definition ids (the same in every tenant).
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

var functionAppName = 'func-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}'

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${resourceToken}'
  location: location
  tags: tags
}

// ---- monitoring: Entra-only ingestion (local auth off); the app sends as its identity

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${resourceToken}'
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
    features: {
      disableLocalAuth: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${resourceToken}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    DisableLocalAuth: true
  }
}

// ---- the app's own storage: deployment package and host state

resource appStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'st${resourceToken}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
  }
}

resource appBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: appStorage
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: appBlobs
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

// ---- the insights data

resource dataStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'stdata${resourceToken}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: insightsStorageSku
  }
  properties: {
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
  }
}

resource dataTables 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: dataStorage
  name: 'default'
}

resource insightsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: dataTables
  name: insightsTableName
}

// ---- role assignments: exactly what each principal needs, each on the narrowest scope

// The deployment package and the host's AzureWebJobsStorage (the timer's blobs).
resource appStorageRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appStorage.id, identity.id, roles.storageBlobDataOwner)
  scope: appStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Reads, and the ingestion API's writes, on the insights table only.
resource tableRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insightsTable.id, identity.id, roles.storageTableDataContributor)
  scope: insightsTable
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Telemetry to Application Insights with local auth off.
resource monitoringRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, identity.id, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// The deploying user: the data commands (load, export, migrate, ...) from a laptop.
resource userTableRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(principalId)) {
  name: guid(insightsTable.id, principalId, roles.storageTableDataContributor)
  scope: insightsTable
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: principalId
    principalType: principalType
  }
}

// ---- the Function App: Flex Consumption, Python 3.13

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-${resourceToken}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: functionAppName
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${appStorage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
        // every HTTP function scales as one group, named 'http'
        alwaysReady: (alwaysReadyInstances > 0) ? [
          {
            name: 'http'
            instanceCount: alwaysReadyInstances
          }
        ] : []
        triggers: {
          http: {
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
      runtime: {
        name: 'python'
        version: '3.13'
      }
    }
  }

  // Every setting the code reads (shared/settings.py, host.json, the runtime library): the test
  // suite checks this list against the typed settings and local.settings.sample.json.
  resource appSettings 'config' = {
    name: 'appsettings'
    properties: union(auth, {
      // the Functions host's own storage, through the identity (no connection string, no key);
      // blobs only: the timer's schedule status and lock are all the host keeps
      AzureWebJobsStorage__credential: 'managedidentity'
      AzureWebJobsStorage__clientId: identity.properties.clientId
      AzureWebJobsStorage__blobServiceUri: appStorage.properties.primaryEndpoints.blob
      APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
      APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.properties.clientId};Authorization=AAD'
      // DefaultAzureCredential picks the user-assigned identity by this
      AZURE_CLIENT_ID: identity.properties.clientId
      INSIGHTS_STORAGE_ACCOUNT_URL: dataStorage.properties.primaryEndpoints.table
      INSIGHTS_TABLE_NAME: insightsTableName
      PURGE_SCHEDULE: purgeSchedule
      PYTHON_ENABLE_OPENTELEMETRY: 'true'
      PYDANTIC_DISABLE_PLUGINS: '__all__'
      // request limits and storage timeouts: the code's defaults, written out so an operator
      // sees and tunes them in one place
      MAX_REQUEST_BYTES: '4194304'
      INGEST_MAX_DOCUMENTS: '1000'
      REQUEST_BUDGET_SECONDS: '4'
      STORAGE_CONNECT_TIMEOUT_SECONDS: '1'
      STORAGE_READ_TIMEOUT_SECONDS: '1.5'
      STORAGE_RETRIES: '1'
      STORAGE_MAX_CONCURRENT_READS: '8'
      THROTTLE_REQUESTS_PER_MINUTE: '1200'
      // how long a contact's or tenant's delete waits for writes already in flight (docs/write-rules.md)
      WRITE_SETTLE_SECONDS: '30'
      // how long tombstones and delete watermarks are kept before housekeeping collects them
      TOMBSTONE_GRACE_DAYS: '10'
    })
    dependsOn: [
      // the host starts with these settings: its storage and telemetry rights must exist first
      appStorageRole
      tableRole
      monitoringRole
    ]
  }
}

// Basic (publishing-password) auth off for FTP and the deployment endpoint: azd and
// `func azure functionapp publish` sign in with Entra ID.
resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

// ---- alerts an operator can act on (README "Operate it" says what each means and where to look)

// Mail goes to one address, if given; without it the rules still exist and show in the portal.
resource alertActions 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: 'ag-${resourceToken}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'insights'
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var alertActionGroups = empty(alertEmail) ? [] : [
  {
    actionGroupId: alertActions.id
  }
]

// Answers that failed for a reason a caller did not cause: 5xx other than the app's own 503
// (which has its own rule), e.g. an unhandled error. 401/403 are refusals of bad tokens (the
// availability test's calls among them) and 4xx are the caller's mistakes.
resource failedRequestsAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'alert-failed-requests-${resourceToken}'
  location: 'global'
  tags: tags
  properties: {
    description: 'Requests answered with a 5xx other than 503 (the app failed, not the caller): docs/operations.md "Failed requests".'
    severity: 1
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT1M'
    windowSize: 'PT5M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'server-failures'
          metricNamespace: 'microsoft.insights/components'
          metricName: 'requests/count'
          dimensions: [
            {
              name: 'request/resultCode'
              operator: 'Include'
              values: [
                '500'
                '502'
                '504'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Count'
        }
      ]
    }
    actions: alertActionGroups
  }
}

// The app's own 503s: admission refused work (storage slow or overloaded) or storage failed; each
// is an answer a seller did not get.
resource overloadedAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'alert-503-answers-${resourceToken}'
  location: 'global'
  tags: tags
  properties: {
    description: 'The app answered 503 (overloaded, storage unavailable or out of time): docs/operations.md "503 answers".'
    severity: 2
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT1M'
    windowSize: 'PT5M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'service-unavailable'
          metricNamespace: 'microsoft.insights/components'
          metricName: 'requests/count'
          dimensions: [
            {
              name: 'request/resultCode'
              operator: 'Include'
              values: [
                '503'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 10
          timeAggregation: 'Count'
        }
      ]
    }
    actions: alertActionGroups
  }
}

// Copilot drops an answer slower than 5 seconds: alert when the 95th percentile of the last
// five minutes passes 3.5 s (a log query: metric alerts have no percentiles).
resource slowAnswersAlert 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: 'alert-slow-answers-${resourceToken}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    description: 'The 95th percentile of request duration passed 3.5 s of the 5 s Copilot waits: docs/operations.md "Slow answers".'
    severity: 2
    enabled: true
    scopes: [
      logAnalytics.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      allOf: [
        {
          query: 'AppRequests | summarize p95 = percentile(DurationMs, 95)'
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'p95'
          operator: 'GreaterThan'
          threshold: 3500
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: empty(alertEmail) ? [] : [
        alertActions.id
      ]
    }
  }
}

// The insights account refusing work: Azure Storage's throttling (ServerBusyError) and its
// timeouts (ServerTimeoutError) on the table service.
resource storageThrottlingAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'alert-storage-throttling-${resourceToken}'
  location: 'global'
  tags: tags
  properties: {
    description: 'The insights table answered ServerBusyError or ServerTimeoutError: docs/operations.md "Storage throttling".'
    severity: 2
    enabled: true
    scopes: [
      dataTables.id
    ]
    evaluationFrequency: 'PT1M'
    windowSize: 'PT5M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'throttled'
          metricNamespace: 'Microsoft.Storage/storageAccounts/tableServices'
          metricName: 'Transactions'
          dimensions: [
            {
              name: 'ResponseType'
              operator: 'Include'
              values: [
                'ServerBusyError'
                'ServerTimeoutError'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Total'
        }
      ]
    }
    actions: alertActionGroups
  }
}

// From outside: the test-connection route, without a token, must answer 401 (the app is up, its
// routes are served and it refuses an anonymous caller), from three regions every five minutes.
resource availabilityTest 'Microsoft.Insights/webtests@2022-06-15' = {
  name: 'webtest-${resourceToken}'
  location: location
  tags: union(tags, {
    'hidden-link:${appInsights.id}': 'Resource'
  })
  kind: 'standard'
  properties: {
    SyntheticMonitorId: 'webtest-${resourceToken}'
    Name: 'test connection answers 401 without a token'
    Enabled: true
    Frequency: 300
    Timeout: 30
    Kind: 'standard'
    RetryEnabled: true
    Locations: [
      {
        Id: 'us-va-ash-azr'
      }
      {
        Id: 'emea-nl-ams-azr'
      }
      {
        Id: 'apac-sg-sin-azr'
      }
    ]
    Request: {
      RequestUrl: 'https://${functionApp.properties.defaultHostName}/api/diagnostics/testconnection'
      HttpVerb: 'GET'
      ParseDependentRequests: false
    }
    ValidationRules: {
      ExpectedHttpStatusCode: 401
      SSLCheck: true
      SSLCertRemainingLifetimeCheck: 7
    }
  }
}

resource availabilityAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'alert-availability-${resourceToken}'
  location: 'global'
  tags: tags
  properties: {
    description: 'The availability test failed from 2 of its 3 locations: docs/operations.md "Availability".'
    severity: 1
    enabled: true
    scopes: [
      availabilityTest.id
      appInsights.id
    ]
    evaluationFrequency: 'PT1M'
    windowSize: 'PT5M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.WebtestLocationAvailabilityCriteria'
      webTestId: availabilityTest.id
      componentId: appInsights.id
      failedLocationCount: 2
    }
    actions: alertActionGroups
  }
}

output functionAppName string = functionApp.name
output functionAppUri string = 'https://${functionApp.properties.defaultHostName}'
output insightsTableEndpoint string = dataStorage.properties.primaryEndpoints.table
output identityClientId string = identity.properties.clientId
output applicationInsightsName string = appInsights.name
